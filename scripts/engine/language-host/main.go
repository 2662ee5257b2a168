// pulumi-language-python (offline stand-in), built by scripts/bootstrap-engine.
//
// The Go module proxy reachable from this project's machines does not serve the
// module that holds Pulumi's own Python language host, so bootstrap-engine
// builds this small LanguageRuntime server instead. It is linked against the
// Pulumi Go SDK (github.com/pulumi/pulumi/sdk/v3) at the version of the CLI it
// serves and uses that SDK's python/toolchain package to pick the interpreter
// from the runtime options (virtualenv / toolchain), so those options of
// Pulumi.yaml and PulumiPolicy.yaml keep their meaning. Programs are run with
// the pulumi-language-python-exec script of the Python SDK's version, which
// bootstrap-engine copies from the Go SDK module beside this binary.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// version is set with -ldflags "-X main.version=..." by bootstrap-engine.
var version = "0.0.0-dev"

// exitCodeUserMessage is the exit code the exec script uses after it has already
// reported an error to the user; the engine should then not print another one.
const exitCodeUserMessage = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	tracing       string
}

// options are the runtime options of Pulumi.yaml / PulumiPolicy.yaml.
type options struct {
	virtualenv  string
	toolchain   string
	typechecker string
}

func readOptions(info *pulumirpc.ProgramInfo) options {
	var o options
	if info == nil || info.GetOptions() == nil {
		return o
	}
	m := info.GetOptions().AsMap()
	str := func(k string) string {
		if v, ok := m[k]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	o.virtualenv = str("virtualenv")
	o.toolchain = str("toolchain")
	o.typechecker = str("typechecker")
	return o
}

// resolve returns the python toolchain for a program.
func resolve(info *pulumirpc.ProgramInfo, fallbackDir string) (toolchain.Toolchain, options, error) {
	o := readOptions(info)
	root, progDir := fallbackDir, fallbackDir
	if info != nil {
		if info.GetRootDirectory() != "" {
			root = info.GetRootDirectory()
		}
		if info.GetProgramDirectory() != "" {
			progDir = info.GetProgramDirectory()
		}
	}
	po := toolchain.PythonOptions{Root: root, ProgramDir: progDir, Virtualenv: o.virtualenv}
	switch strings.ToLower(o.toolchain) {
	case "", "auto":
		po.Toolchain = toolchain.Auto
	case "pip":
		po.Toolchain = toolchain.Pip
	case "poetry":
		po.Toolchain = toolchain.Poetry
	case "uv":
		po.Toolchain = toolchain.Uv
	default:
		return nil, o, fmt.Errorf("unsupported python toolchain option %q", o.toolchain)
	}
	tc, err := toolchain.ResolveToolchain(po)
	return tc, o, err
}

func (h *host) Handshake(ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(ctx context.Context, _ *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// pluginJSON mirrors the pulumi-plugin.json file that provider SDK packages ship.
type pluginJSON struct {
	Package          string `json:"package"`
	Resource         bool   `json:"resource"`
	Name             string `json:"name"`
	Version          string `json:"version"`
	Server           string `json:"server"`
	Parameterization *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Value   string `json:"value"`
	} `json:"parameterization"`
}

// listPluginsPy asks the program's python which installed packages ship a
// pulumi-plugin.json (provider SDKs do) and prints their parsed contents.
const listPluginsPy = `
import json, os, sys
out, seen = [], set()
for base in sys.path:
    if not base or not os.path.isdir(base) or base in seen:
        continue
    seen.add(base)
    try:
        names = sorted(os.listdir(base))
    except OSError:
        continue
    for name in names:
        f = os.path.join(base, name, "pulumi-plugin.json")
        if os.path.isfile(f):
            try:
                with open(f) as fh:
                    data = json.load(fh)
            except Exception:
                continue
            data["package"] = name
            out.append(data)
json.dump(out, sys.stdout)
`

func (h *host) requiredPackages(ctx context.Context, info *pulumirpc.ProgramInfo) ([]*pulumirpc.PackageDependency, error) {
	tc, _, err := resolve(info, ".")
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPluginsPy)
	if err != nil {
		return nil, err
	}
	if info != nil && info.GetProgramDirectory() != "" {
		cmd.Dir = info.GetProgramDirectory()
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing python packages: %w: %s", err, stderr.String())
	}
	var plugins []pluginJSON
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("parsing python package list: %w", err)
	}
	seen := map[string]bool{}
	var deps []*pulumirpc.PackageDependency
	for _, p := range plugins {
		if !p.Resource {
			continue
		}
		name := p.Name
		if name == "" {
			name = strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(p.Package), "pulumi_"), "pulumi-")
		}
		v := p.Version
		if v != "" && !strings.HasPrefix(v, "v") {
			v = "v" + v
		}
		dep := &pulumirpc.PackageDependency{Kind: "resource", Name: name, Version: v, Server: p.Server}
		if p.Parameterization != nil {
			value, err := base64.StdEncoding.DecodeString(p.Parameterization.Value)
			if err != nil {
				return nil, fmt.Errorf("package %s: bad parameterization value: %w", p.Package, err)
			}
			pv := p.Parameterization.Version
			if pv != "" && !strings.HasPrefix(pv, "v") {
				pv = "v" + pv
			}
			dep.Parameterization = &pulumirpc.PackageParameterization{
				Name: p.Parameterization.Name, Version: pv, Value: value,
			}
		}
		key := dep.Name + "@" + dep.Version
		if dep.Parameterization != nil {
			key += "/" + dep.Parameterization.Name
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		deps = append(deps, dep)
	}
	return deps, nil
}

func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	var plugins []*pulumirpc.PluginDependency
	for _, d := range deps {
		if d.Parameterization != nil {
			continue
		}
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

// execScript finds pulumi-language-python-exec next to this executable.
func execScript() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	p := filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("pulumi-language-python-exec not found next to %s: %w", self, err)
	}
	return p, nil
}

func withEnv(cmd *exec.Cmd, extra ...string) {
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, extra...)
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, o, err := resolve(req.GetInfo(), req.GetPwd())
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	if o.typechecker != "" {
		return nil, fmt.Errorf("the 'typechecker' runtime option is not supported by this offline language host")
	}
	script, err := execScript()
	if err != nil {
		return nil, err
	}

	program := req.GetProgram()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		entry := info.GetEntryPoint()
		if entry == "" {
			entry = "."
		}
		program = filepath.Join(info.GetProgramDirectory(), entry)
	}
	if program == "" {
		program = "."
	}

	args := []string{"-u", script}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())
	if info := req.GetInfo(); info != nil {
		add("root_directory", info.GetRootDirectory())
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{} // "null" would break the exec script
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	withEnv(cmd, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secretJSON))
	cmd.Dir = req.GetPwd()
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	logging.V(5).Infof("pulumi-language-python: running %s %v", cmd.Path, cmd.Args)

	runErr := cmd.Run()
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()
	if runErr == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(runErr, &exitErr) {
		if exitErr.ExitCode() == exitCodeUserMessage {
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("program exited with non-zero exit code: %d", exitErr.ExitCode()),
		}, nil
	}
	return &pulumirpc.RunResponse{
		Error: fmt.Sprintf("could not start the python program: %v", runErr),
	}, nil
}

// RunPlugin runs a plugin written in Python (a policy pack, for instance):
// `python <program dir> <args>`, streaming its output back to the engine.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	ctx := server.Context()
	tc, _, err := resolve(req.GetInfo(), req.GetPwd())
	if err != nil {
		return err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return err
	}
	program := req.GetProgram()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		program = info.GetProgramDirectory()
	}
	args := append([]string{"-u", program}, req.GetArgs()...)
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return err
	}
	// The engine hands over the plugin's whole environment; keep the toolchain's
	// virtualenv activation on top of it.
	env := req.GetEnv()
	if venv, verr := tc.VirtualEnvPath(ctx); verr == nil && venv != "" {
		env = toolchain.ActivateVirtualEnv(env, venv)
	}
	cmd.Env = env
	cmd.Dir = req.GetPwd()

	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return server.Send(&pulumirpc.RunPluginResponse{
				Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(exitErr.ExitCode())},
			})
		}
		return fmt.Errorf("could not start the python plugin: %w", err)
	}
	return closer.Close()
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	ctx := server.Context()
	dir := req.GetDirectory()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		dir = info.GetProgramDirectory()
	}
	tc, _, err := resolve(req.GetInfo(), dir)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()

	// An existing virtual environment is used as it is, apart from a
	// requirements.txt beside the program; a missing one is created the way the
	// toolchain does it.
	if tc.ValidateVenv(ctx) == nil {
		if venv, _ := tc.VirtualEnvPath(ctx); venv == "" || toolchain.IsVirtualEnv(venv) {
			reqs := filepath.Join(dir, "requirements.txt")
			if _, err := os.Stat(reqs); err == nil {
				cmd, err := tc.ModuleCommand(ctx, "pip", "install", "-r", reqs)
				if err != nil {
					return err
				}
				cmd.Dir = dir
				cmd.Stdout, cmd.Stderr = stdout, stderr
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("pip install -r %s: %w", reqs, err)
				}
			}
			return closer.Close()
		}
	}
	if err := tc.InstallDependencies(ctx, dir, req.GetUseLanguageVersionTools(), true, stdout, stderr); err != nil {
		return err
	}
	return closer.Close()
}

func (h *host) RuntimeOptionsPrompts(ctx context.Context, req *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) Template(ctx context.Context, req *pulumirpc.TemplateRequest) (*pulumirpc.TemplateResponse, error) {
	return &pulumirpc.TemplateResponse{}, nil
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, o, err := resolve(req.GetInfo(), ".")
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	meta := map[string]string{"implementation": "bootstrap-engine offline language host"}
	if o.toolchain != "" {
		meta["toolchain"] = o.toolchain
	}
	if venv, err := tc.VirtualEnvPath(ctx); err == nil && venv != "" {
		meta["virtualenv"] = venv
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
		Metadata:   meta,
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, _, err := resolve(req.GetInfo(), req.GetPwd())
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pkgs {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return resp, nil
}

func main() {
	// The engine passes --logtostderr, -v=N, --tracing ADDR and finally the
	// engine address. A private flag set avoids clashing with flags that
	// imported packages register on the global one.
	fs := flag.NewFlagSet("pulumi-language-python", flag.ContinueOnError)
	tracing := fs.String("tracing", "", "tracing endpoint")
	logToStderr := fs.Bool("logtostderr", false, "log to stderr")
	logFlow := fs.Bool("logflow", false, "flow logging settings to child processes")
	verbose := fs.Int("v", 0, "log verbosity")
	fs.String("root", "", "project root (ignored)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(version)
		return
	}
	logging.InitLogging(*logToStderr, *verbose, *logFlow)

	h := &host{tracing: *tracing}
	if fs.NArg() > 0 {
		h.engineAddress = fs.Arg(0)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if h.engineAddress != "" {
		// Exit when the engine goes away.
		if err := rpcutil.Healthcheck(ctx, h.engineAddress, time.Minute, cancel); err != nil {
			fmt.Fprintf(os.Stderr, "pulumi-language-python: could not watch the engine: %v\n", err)
		}
	}
	cancelChannel := make(chan bool)
	go func() {
		<-ctx.Done()
		close(cancelChannel)
	}()

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancelChannel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: []grpc.ServerOption{grpc.MaxRecvMsgSize(400 * 1024 * 1024)},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: could not start the server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
}
