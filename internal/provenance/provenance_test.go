package provenance_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/provenance"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func facts() provenance.Facts {
	return provenance.Facts{
		ArtifactSHA256: strings.Repeat("ab", 32), Project: "hello", GitURL: "file:///src/hello",
		Commit: strings.Repeat("c", 40), Options: map[string]string{"opt": "O2"},
		Constraints:  &kilnv1.PlatformConstraints{Arch: "s390x"},
		Dependencies: []*kilnv1.BuildDependency{{Project: "zlib", BuildId: 3, Artifact: &kilnv1.Artifact{Sha256: strings.Repeat("d", 64)}}},
		Toolchain:    &kilnv1.SystemInfo{Os: "linux", Arch: "s390x", Compiler: "gcc"},
		BuildServer:  "bs1", AttemptID: 7<<8 | 1,
		Started: time.Unix(1000, 0), Ended: time.Unix(1060, 0), LogSHA256: strings.Repeat("e", 64),
	}
}

func claim() provenance.Claim {
	f := facts()
	return provenance.Claim{ArtifactSHA256: f.ArtifactSHA256, Project: f.Project, Commit: f.Commit, BuildServer: f.BuildServer, AttemptID: f.AttemptID}
}

func key(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen_RoundTripAndChecks(t *testing.T) {
	k := key(t)
	st, err := provenance.NewStatement(facts())
	if err != nil {
		t.Fatal(err)
	}
	env, err := provenance.Seal(k, st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := provenance.Open(env, k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if why := provenance.CheckStatement(got, claim()); why != "" {
		t.Fatalf("own statement refused: %s", why)
	}
	p, err := provenance.Provenance(got)
	if err != nil {
		t.Fatal(err)
	}
	if by := p.GetRunDetails().GetByproducts(); len(by) != 1 || by[0].GetDigest()["sha256"] != facts().LogSHA256 {
		t.Errorf("byproducts %v, want the log's sha256", by)
	}
	if deps := p.GetBuildDefinition().GetResolvedDependencies(); len(deps) != 3 {
		t.Errorf("%d resolved dependencies, want source, zlib and toolchain", len(deps))
	}
}

func TestOpen_OtherKeyRefused(t *testing.T) {
	st, _ := provenance.NewStatement(facts())
	env, err := provenance.Seal(key(t), st)
	if err != nil {
		t.Fatal(err)
	}
	_, err = provenance.Open(env, key(t).Public().(ed25519.PublicKey))
	if !errors.Is(err, provenance.ErrBadSignature) {
		t.Fatalf("statement signed with another key: %v, want ErrBadSignature", err)
	}
}

func TestOpen_ChangedPayloadRefused(t *testing.T) {
	k := key(t)
	st, _ := provenance.NewStatement(facts())
	env, _ := provenance.Seal(k, st)
	var m map[string]any
	if err := json.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	other := facts()
	other.ArtifactSHA256 = strings.Repeat("00", 32)
	st2, _ := provenance.NewStatement(other)
	env2, _ := provenance.Seal(key(t), st2)
	var m2 map[string]any
	_ = json.Unmarshal(env2, &m2)
	m["payload"] = m2["payload"] // another statement under this signature
	forged, _ := json.Marshal(m)
	if _, err := provenance.Open(forged, k.Public().(ed25519.PublicKey)); !errors.Is(err, provenance.ErrBadSignature) {
		t.Fatalf("changed payload: %v, want ErrBadSignature", err)
	}
}

func TestCheckStatement_Replay(t *testing.T) {
	st, _ := provenance.NewStatement(facts())
	for name, change := range map[string]func(*provenance.Claim){
		"another artifact": func(c *provenance.Claim) { c.ArtifactSHA256 = strings.Repeat("11", 32) },
		"another attempt":  func(c *provenance.Claim) { c.AttemptID++ },
		"another builder":  func(c *provenance.Claim) { c.BuildServer = "bs2" },
		"another commit":   func(c *provenance.Claim) { c.Commit = strings.Repeat("f", 40) },
	} {
		c := claim()
		change(&c)
		if why := provenance.CheckStatement(st, c); why == "" {
			t.Errorf("%s: statement accepted", name)
		}
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), provenance.KeyFile)
	k1, err := provenance.LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	k2, err := provenance.LoadOrCreateKey(p)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("second load gave another key (%v)", err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := provenance.LoadOrCreateKey(p); !errors.Is(err, provenance.ErrKeyPermissions) {
		t.Fatalf("world-readable key: %v, want ErrKeyPermissions", err)
	}
}

func BenchmarkSealStatement(b *testing.B) {
	k := key(b)
	start := cpuTime()
	for b.Loop() {
		st, err := provenance.NewStatement(facts())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := provenance.Seal(k, st); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start, 1, "cpu-µs/op")
}

func BenchmarkOpenAndCheck(b *testing.B) {
	k := key(b)
	st, _ := provenance.NewStatement(facts())
	env, _ := provenance.Seal(k, st)
	pub := k.Public().(ed25519.PublicKey)
	start := cpuTime()
	for b.Loop() {
		got, err := provenance.Open(env, pub)
		if err != nil {
			b.Fatal(err)
		}
		if why := provenance.CheckStatement(got, claim()); why != "" {
			b.Fatal(why)
		}
	}
	reportCPU(b, start, 1, "cpu-µs/op")
}

// reportCPU reports the process's CPU time per op (user + system), which
// a busy machine inflates less than the wall time of ns/op.
func reportCPU(b *testing.B, start time.Duration, perOp float64, unit string) {
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N)/perOp, unit)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSealSummary is the metaserver's part of a success besides
// checking: its verification summary, made and signed.
func BenchmarkSealSummary(b *testing.B) {
	k := key(b)
	refs := []provenance.StatementRef{{Index: 7, EntrySHA256: strings.Repeat("ab", 32)}}
	start := cpuTime()
	for b.Loop() {
		st, err := provenance.NewSummary("kiln-log", 7, strings.Repeat("cd", 32), refs, time.Unix(100, 0))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := provenance.Seal(k, st); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start, 1, "cpu-µs/op")
}
