// CoreDNS with only the plugins the cluster DNS uses (scripts/cluster.d/coredns/coredns.yaml).
//
// Deliberately absent: forward, proxy, grpc, etcd, the cloud DNS plugins. Without them the
// server cannot send a query anywhere: it answers the cluster domain from the API and refuses
// every other zone. Built by scripts/bootstrap-cluster against github.com/coredns/coredns at
// the version pinned there; the plugin execution order comes from CoreDNS itself
// (core/dnsserver/zdirectives.go), not from this list.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }
