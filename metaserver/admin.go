package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/config"
	"github.com/kilnbuild/kiln/internal/server"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const adminSocket = "admin.sock"

// listenAdmin serves the AdminService on DIR/admin.sock, readable by the
// owner only: the socket's file mode is the admin authentication.
func listenAdmin(dataDir string, admin *server.Admin, opts ...grpc.ServerOption) (*grpc.Server, net.Listener, error) {
	path := filepath.Join(dataDir, adminSocket)
	_ = os.Remove(path) // a stale socket of a killed process; the store lock proves we are alone
	old := umask(0o077)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, nil, err
	}
	gs := grpc.NewServer(opts...)
	kilnv1.RegisterAdminServiceServer(gs, admin)
	return gs, ln, nil
}

// adminTarget is where an admin command sends its calls.
type adminTarget struct {
	// DataDir is the metaserver's data directory (its admin socket, and
	// bbolt's file when Store is "").
	DataDir string
	// Store is a postgres:// URL: the writer found through it (or the
	// store itself when no metaserver holds it).
	Store string
	// TLS says how to reach a writer found through Store.
	TLS auth.ClientTLS
}

// adminClient returns an AdminService client: over the running metaserver's
// socket, or in-process against the store when no metaserver runs. With a
// PostgreSQL store and no socket at hand, over the network to the writer
// the database names, with the secret it keeps (remoteWriter).
func adminClient(ctx context.Context, to adminTarget) (kilnv1.AdminServiceServer, func(), error) {
	dataDir := to.DataDir
	path := filepath.Join(dataDir, adminSocket)
	if c, err := dialSocket(dataDir); err == nil {
		c.Close()
		conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return remoteAdmin{c: kilnv1.NewAdminServiceClient(conn)}, func() { conn.Close() }, nil
	}
	if to.Store != "" {
		if a, closeFn, err := remoteWriter(ctx, to); a != nil || err != nil {
			return a, closeFn, err
		}
	} else if err := server.DataDirReady(dataDir); err != nil {
		return nil, nil, err
	}
	st, err := openStore(to.Store, dataDir)
	if refused(err) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening store (is a metaserver running without its admin socket?): %w", err)
	}
	closeFn := func() { st.Close() }
	if dataDir == "" {
		// A PostgreSQL store with no data directory: project add's trial
		// clone goes to a scratch directory (the metaserver mirrors on
		// its own).
		scratch, err := os.MkdirTemp("", "kiln-admin-")
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		dataDir = scratch
		closeFn = func() { st.Close(); os.RemoveAll(scratch) }
	}
	return &server.Admin{Store: st, DataDir: dataDir}, closeFn, nil
}

// dialSocket connects to the admin socket in dataDir, if one is given.
func dialSocket(dataDir string) (net.Conn, error) {
	if dataDir == "" {
		return nil, errors.New("no data directory")
	}
	return net.DialTimeout("unix", filepath.Join(dataDir, adminSocket), time.Second)
}

// remoteWriter returns a client of the metaserver holding the PostgreSQL
// store to.Store, reached at the address it advertised there and
// authorized with the secret it keeps there. It returns nil and no error
// when no metaserver holds the store: the caller opens it itself.
func remoteWriter(ctx context.Context, to adminTarget) (kilnv1.AdminServiceServer, func(), error) {
	e, held, err := pgstore.Writer(ctx, to.Store)
	if err != nil {
		return nil, nil, err
	}
	if !held {
		return nil, nil, nil
	}
	if e.Addr == "" {
		return nil, nil, errors.New("a metaserver holds the store but has not advertised its address yet; try again in a moment")
	}
	tlsCfg := to.TLS
	if e.TLS && tlsCfg.CAFile == "" {
		tlsCfg.TLS = true
	}
	creds, secure, err := tlsCfg.DialCredentials(e.Addr)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+e.Addr, creds, grpc.WithPerRPCCredentials(auth.Bearer{Token: e.Secret, Secure: secure}))
	if err != nil {
		return nil, nil, err
	}
	return remoteAdmin{c: kilnv1.NewAdminServiceClient(conn)}, func() { conn.Close() }, nil
}

// remoteAdmin adapts the client to the server interface, so both paths share code.
type remoteAdmin struct {
	kilnv1.UnimplementedAdminServiceServer
	c kilnv1.AdminServiceClient
}

func (r remoteAdmin) AddProject(ctx context.Context, req *kilnv1.AddProjectRequest) (*kilnv1.AddProjectResponse, error) {
	return r.c.AddProject(ctx, req)
}
func (r remoteAdmin) ListProjects(ctx context.Context, req *kilnv1.ListProjectsRequest) (*kilnv1.ListProjectsResponse, error) {
	return r.c.ListProjects(ctx, req)
}
func (r remoteAdmin) AddOperator(ctx context.Context, req *kilnv1.AddOperatorRequest) (*kilnv1.AddOperatorResponse, error) {
	return r.c.AddOperator(ctx, req)
}
func (r remoteAdmin) AddBuildServer(ctx context.Context, req *kilnv1.AddBuildServerRequest) (*kilnv1.AddBuildServerResponse, error) {
	return r.c.AddBuildServer(ctx, req)
}
func (r remoteAdmin) RevokeBuildServer(ctx context.Context, req *kilnv1.RevokeBuildServerRequest) (*kilnv1.RevokeBuildServerResponse, error) {
	return r.c.RevokeBuildServer(ctx, req)
}
func (r remoteAdmin) CreateEnrollToken(ctx context.Context, req *kilnv1.CreateEnrollTokenRequest) (*kilnv1.CreateEnrollTokenResponse, error) {
	return r.c.CreateEnrollToken(ctx, req)
}
func (r remoteAdmin) CancelBuild(ctx context.Context, req *kilnv1.CancelBuildRequest) (*kilnv1.CancelBuildResponse, error) {
	return r.c.CancelBuild(ctx, req)
}
func (r remoteAdmin) Backup(ctx context.Context, req *kilnv1.BackupRequest) (*kilnv1.BackupResponse, error) {
	return r.c.Backup(ctx, req)
}
func (r remoteAdmin) Pin(ctx context.Context, req *kilnv1.PinRequest) (*kilnv1.PinResponse, error) {
	return r.c.Pin(ctx, req)
}

// adminCommand runs one admin subcommand; exit 0 ok, 1 failed, 2 bad usage.
func adminCommand(name string, args []string) int {
	fs := flag.NewFlagSet("metaserver "+name, flag.ContinueOnError)
	dataDir := fs.String("data-dir", os.Getenv("KILN_DATA_DIR"), "the metaserver's data directory (env KILN_DATA_DIR)")
	storeURL := fs.String("store", os.Getenv("KILN_STORE"), "postgres:// URL of a PostgreSQL store, in place of --data-dir: the command goes to the metaserver holding it, found and authorized through the database, or to the database itself when none runs (env KILN_STORE)")
	caFile := fs.String("ca", "", "with --store: PEM CA certificates of the metaserver's TLS certificate (default: the system's roots when it serves TLS)")
	insecureFlag := fs.Bool("insecure", false, "with --store: allow plaintext to a metaserver at a non-loopback address")
	reason := fs.String("reason", "", "cancel: why the build is cancelled, shown as its failure (default \"cancelled by an administrator\")")
	operator := fs.String("operator", "", "buildserver add, enroll-token create: the operator (metaserver operator add) the credential belongs to; two build servers of one operator never count twice toward a verification (default: the credential is its own operator)")
	ttl := fs.Duration("ttl", 0, "enroll-token create: how long the token may be used, whole seconds (default 7 days)")
	purge := fs.Bool("purge", false, "buildserver revoke: also withdraw from the cache and from pins the artifacts this build server alone produced")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	want := map[string]int{"operator add": 1, "project add": 2, "project list": 0, "buildserver add": 1, "buildserver revoke": 1, "pin": 2, "enroll-token create": 0, "cancel": 1}
	n, known := want[name]
	if !known {
		fmt.Fprintf(os.Stderr, "metaserver: unknown command %q\n%s", name, usage)
		return 2
	}
	if err := config.AbsPaths(fs, "data-dir"); err != nil {
		fmt.Fprintf(os.Stderr, "metaserver %s: %v\n", name, err)
		return 2
	}
	if (*dataDir == "" && *storeURL == "") || fs.NArg() != n {
		fmt.Fprintf(os.Stderr, "metaserver %s: needs --data-dir or --store, and %d argument(s)\n%s", name, n, usage)
		return 2
	}
	if err := checkStoreURL(*storeURL); err != nil {
		fmt.Fprintf(os.Stderr, "metaserver %s: %v\n", name, err)
		return 2
	}
	if *reason != "" && name != "cancel" {
		fmt.Fprintf(os.Stderr, "metaserver %s: --reason is only for cancel\n%s", name, usage)
		return 2
	}
	if *operator != "" && name != "buildserver add" && name != "enroll-token create" {
		fmt.Fprintf(os.Stderr, "metaserver %s: --operator is only for buildserver add and enroll-token create\n%s", name, usage)
		return 2
	}
	if *ttl != 0 && (name != "enroll-token create" || *ttl < time.Second || *ttl%time.Second != 0 || *ttl > math.MaxUint32*time.Second) {
		fmt.Fprintf(os.Stderr, "metaserver %s: --ttl is only for enroll-token create, in whole seconds from 1s\n%s", name, usage)
		return 2
	}
	if *purge && name != "buildserver revoke" {
		fmt.Fprintf(os.Stderr, "metaserver %s: --purge is only for buildserver revoke\n%s", name, usage)
		return 2
	}
	a := fs.Args()
	var cancelID uint64
	if name == "cancel" {
		id, perr := strconv.ParseUint(a[0], 10, 64)
		if perr != nil || id == 0 {
			fmt.Fprintf(os.Stderr, "metaserver cancel: BUILD_ID %q is not a build number\n", a[0])
			return 2
		}
		cancelID = id
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	admin, closeFn, err := adminClient(ctx, adminTarget{DataDir: *dataDir, Store: *storeURL, TLS: auth.ClientTLS{CAFile: *caFile, Insecure: *insecureFlag}})
	if refused(err) {
		return refusal(name, err)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "metaserver:", err)
		return 1
	}
	defer closeFn()
	switch name {
	case "project add":
		_, err = admin.AddProject(ctx, &kilnv1.AddProjectRequest{Project: &kilnv1.Project{Name: a[0], GitUrl: a[1]}})
		if err == nil {
			fmt.Printf("project %s registered (%s)\n", a[0], a[1])
		}
	case "project list":
		var resp *kilnv1.ListProjectsResponse
		resp, err = admin.ListProjects(ctx, &kilnv1.ListProjectsRequest{})
		for _, p := range resp.GetProjects() {
			fmt.Printf("%s\t%s\n", p.GetName(), p.GetGitUrl())
		}
	case "operator add":
		_, err = admin.AddOperator(ctx, &kilnv1.AddOperatorRequest{Name: a[0]})
		if err == nil {
			fmt.Printf("operator %s added\n", a[0])
		}
	case "buildserver add":
		var resp *kilnv1.AddBuildServerResponse
		resp, err = admin.AddBuildServer(ctx, &kilnv1.AddBuildServerRequest{Name: a[0], Operator: *operator})
		if err == nil {
			fmt.Println(resp.GetToken())
		}
	case "buildserver revoke":
		var resp *kilnv1.RevokeBuildServerResponse
		resp, err = admin.RevokeBuildServer(ctx, &kilnv1.RevokeBuildServerRequest{Name: a[0], Purge: *purge})
		if err == nil {
			printPurge(a[0], *purge, resp)
		}
	case "enroll-token create":
		var resp *kilnv1.CreateEnrollTokenResponse
		resp, err = admin.CreateEnrollToken(ctx, &kilnv1.CreateEnrollTokenRequest{Operator: *operator, TtlSeconds: uint32(*ttl / time.Second)})
		if err == nil {
			fmt.Println(resp.GetToken())
		}
	case "cancel":
		var resp *kilnv1.CancelBuildResponse
		resp, err = admin.CancelBuild(ctx, &kilnv1.CancelBuildRequest{BuildId: cancelID, Reason: *reason})
		if err == nil {
			fmt.Printf("build %d %s: %s\n", resp.GetBuild().GetId(), resp.GetBuild().GetState().Word(), resp.GetBuild().GetFailure())
		}
	case "pin":
		id, perr := strconv.ParseUint(a[1], 10, 64)
		if perr != nil {
			fmt.Fprintf(os.Stderr, "metaserver pin: BUILD_ID %q is not a number\n", a[1])
			return 2
		}
		var resp *kilnv1.PinResponse
		resp, err = admin.Pin(ctx, &kilnv1.PinRequest{Name: a[0], BuildId: id})
		if err == nil {
			fmt.Printf("%s -> %s (%d bytes)\n", resp.GetName(), resp.GetArtifact().GetSha256(), resp.GetArtifact().GetSize())
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "metaserver:", status.Convert(err).Message())
		switch status.Code(err) {
		case codes.InvalidArgument, codes.AlreadyExists, codes.NotFound, codes.FailedPrecondition:
			return 2
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 1
		}
		return 1
	}
	return 0
}

// printPurge prints what a revocation did: one line per artifact withdrawn
// or kept, then a summary.
func printPurge(name string, purged bool, resp *kilnv1.RevokeBuildServerResponse) {
	for _, w := range resp.GetWithdrawn() {
		fmt.Printf("withdrawn: build %d (%s at %.12s) sha256 %s%s\n", w.GetBuildId(), w.GetProject(), w.GetCommit(), w.GetSha256(), pinList(w.GetPins()))
	}
	for _, k := range resp.GetKept() {
		fmt.Printf("kept: build %d (%s at %.12s) sha256 %s, also built by %s%s\n", k.GetBuildId(), k.GetProject(), k.GetCommit(), k.GetSha256(),
			strings.Join(k.GetAlsoBuiltBy(), ", "), pinList(k.GetPins()))
	}
	if !purged {
		fmt.Printf("build server %s revoked\n", name)
		return
	}
	fmt.Printf("build server %s revoked; %d artifact(s) withdrawn, %d kept\n", name, len(resp.GetWithdrawn()), len(resp.GetKept()))
}

func pinList(pins []string) string {
	if len(pins) == 0 {
		return ""
	}
	return ", pins " + strings.Join(pins, ", ")
}
