// pause: the process that holds a pod sandbox's namespaces (PID 1 of every pod).
//
// It sleeps until SIGINT or SIGTERM and reaps the zombies re-parented to it. Built by
// scripts/bootstrap-cluster (CGO_ENABLED=0, static) into the local image the containerd
// config names as its sandbox_image, so no pod ever pulls registry.k8s.io/pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
