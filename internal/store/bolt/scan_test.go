package bolt

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// randomBuild is a build record with each field the scanners read (and
// some they skip) set or left out at random.
func randomBuild(rng *rand.Rand) *store.Build {
	pick := func(vals ...string) string { return vals[rng.IntN(len(vals))] }
	b := &kilnv1.Build{
		Id: rng.Uint64N(1 << 40), Project: pick("", "p", "project-é", string(bytes.Repeat([]byte("x"), 300))),
		Commit: pick("", "0123456789abcdef0123456789abcdef01234567"),
		State:  kilnv1.BuildState(rng.IntN(8)),
	}
	if rng.IntN(2) == 0 {
		b.Options = map[string]string{"arch": "sparc", "n": fmt.Sprint(rng.IntN(100))}
	}
	if rng.IntN(3) > 0 {
		b.Constraints = &kilnv1.PlatformConstraints{Os: pick("", "linux"), Arch: pick("", "x86_64", "s390x")}
	}
	if rng.IntN(3) > 0 {
		b.Platform = &kilnv1.SystemInfo{Arch: pick("", "aarch64", "riscv64"), Labels: []string{"arch"}}
	}
	if rng.IntN(2) == 0 {
		b.Attempts = []*kilnv1.Attempt{{Id: 7, BuildServer: "arch", StartedAt: timestamppb.Now()}}
		b.Artifact = &kilnv1.Artifact{Sha256: "ab", Size: 12}
	}
	return &store.Build{Build: b, SourceKey: pick("", "s"), Recipe: &kilnv1.Recipe{BuildSteps: []string{"true"}}}
}

func TestScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	encode := func(m proto.Message) []byte {
		v, err := marshal.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Run("the index fields of a build record are those of its full decode", func(t *testing.T) {
		for i := range 3000 {
			v := encode(randomBuild(rng))
			if i%3 == 0 {
				// Two encodings one after the other merge, as in proto.Unmarshal.
				v = append(v, encode(randomBuild(rng))...)
			}
			full := new(store.Build)
			if err := proto.Unmarshal(v, full); err != nil {
				t.Fatal(err)
			}
			got, err := scanBuildIndexFields(v)
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			id := full.GetBuild().GetId()
			want := indexKeys(full)
			if g := got.keys(id); !bytes.Equal(g.state, want.state) || !bytes.Equal(g.project, want.project) || !bytes.Equal(g.arch, want.arch) {
				t.Fatalf("record %d (%v): scanned keys %+v, full decode %+v", i, full, g, want)
			}
			if got.state != full.GetBuild().GetState() {
				t.Fatalf("record %d: scanned state %v, full decode %v", i, got.state, full.GetBuild().GetState())
			}
		}
	})
	t.Run("the build id of a request record and the source key of an artifact record are those of a full decode", func(t *testing.T) {
		for i := range 1000 {
			r := &store.Request{Id: rng.Uint64N(1 << 40), Email: "a@b", Constraints: &kilnv1.PlatformConstraints{Arch: "x"}, Notified: i%2 == 0}
			if i%4 > 0 {
				r.BuildId = rng.Uint64N(1 << 50)
			}
			got, err := scanRequestBuildID(encode(r))
			if err != nil || got != r.BuildId {
				t.Fatalf("request %v: scanned build id %d, %v", r, got, err)
			}
			a := &store.Artifact{CacheKey: "c", BuildId: 3, Artifact: &kilnv1.Artifact{Sha256: "source"}, Project: "p"}
			if i%4 > 0 {
				a.SourceKey = fmt.Sprintf("%064x", rng.Uint64())
			}
			src, err := scanArtifactSourceKey(encode(a))
			if err != nil || src != a.SourceKey {
				t.Fatalf("artifact %v: scanned source key %q, %v", a, src, err)
			}
		}
	})
	t.Run("a malformed record is an error, not a guess", func(t *testing.T) {
		v := encode(randomBuild(rng))
		for _, bad := range [][]byte{v[:len(v)-1], {0x0a, 0x05, 0x12}, {0xff}} {
			if _, err := scanBuildIndexFields(bad); err == nil && proto.Unmarshal(bad, new(store.Build)) != nil {
				t.Errorf("scanBuildIndexFields(%x): no error, but proto.Unmarshal fails", bad)
			}
		}
	})
}
