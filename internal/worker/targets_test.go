package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestProbeTargetsOffersOnlyTargetsThatProbe(t *testing.T) {
	native, _ := sysinfo.ParseTarget("native")
	cross, _ := sysinfo.ParseTarget("cross:nonexistent-linux-gnu")
	ctx := context.Background()

	// The real prober: the native target works here, a cross compiler that
	// is not installed does not.
	targets, err := ProbeTargets(ctx, []sysinfo.TargetSpec{native, cross}, nil, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 1 || targets[0].Info.GetId() != "native" || targets[0].Info.GetSystem().GetArch() == "" {
		t.Fatalf("targets = %v, want only a measured native", targets)
	}
	if !containsPrefix(targets[0].Env, "CC=") {
		t.Errorf("native toolchain env %q lacks CC", targets[0].Env)
	}

	failing := func(context.Context, sysinfo.TargetSpec, string) (*kilnv1.Target, error) {
		return nil, errors.New("no compiler")
	}
	if _, err := ProbeTargets(ctx, []sysinfo.TargetSpec{native}, failing, t.TempDir(), nil); !errors.Is(err, ErrNoTargets) {
		t.Errorf("all probes failing: err = %v, want ErrNoTargets", err)
	}
}

func TestAFailingTargetIsInHellosRejectedTargetsAndNotInItsTargets(t *testing.T) {
	native, _ := sysinfo.ParseTarget("native")
	cross, _ := sysinfo.ParseTarget("cross:nonexistent-linux-gnu")
	targets, rejected, err := ProbeAll(context.Background(), []sysinfo.TargetSpec{native, cross}, nil, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rejected) != 1 || rejected[0].GetTargetId() != "cross:nonexistent-linux-gnu" || rejected[0].GetReason() == "" {
		t.Fatalf("rejected = %v, want the cross target with a reason", rejected)
	}

	f := startFake(t)
	cfg := testConfig(t, f)
	cfg.Targets, cfg.Rejected = targets, rejected
	startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	h := f.hellos[0]
	if len(h.GetTargets()) != 1 || h.GetTargets()[0].GetId() != "native" {
		t.Errorf("Hello targets = %v, want only native", h.GetTargets())
	}
	r := h.GetRejectedTargets()
	if len(r) != 1 || r[0].GetTargetId() != "cross:nonexistent-linux-gnu" || r[0].GetReason() != rejected[0].GetReason() {
		t.Errorf("Hello rejected targets = %v, want %v", r, rejected)
	}
}

func TestHelloRejectedKeepsWithinTheMetaserversLimits(t *testing.T) {
	many := make([]*kilnv1.RejectedTarget, MaxRejectedTargets+5)
	for i := range many {
		many[i] = &kilnv1.RejectedTarget{TargetId: fmt.Sprintf("cross:t%d", i), Reason: "no compiler"}
	}
	// 2 bytes a rune after one ASCII byte: byte MaxRejectReasonBytes is mid-rune.
	long := "a" + strings.Repeat("é", MaxRejectReasonBytes)
	tests := []struct {
		name      string
		in        []*kilnv1.RejectedTarget
		wantCount int
		wantFirst string
	}{
		{"nothing stays nothing", nil, 0, ""},
		{"a short reason is kept as is", []*kilnv1.RejectedTarget{{TargetId: "musl", Reason: "musl-gcc: not found"}}, 1, "musl-gcc: not found"},
		{"a long reason is cut on a rune boundary", []*kilnv1.RejectedTarget{{TargetId: "musl", Reason: long}}, 1, long[:MaxRejectReasonBytes-1]},
		{"an entry without an id is dropped", []*kilnv1.RejectedTarget{{Reason: "x"}, {TargetId: "musl", Reason: "y"}}, 1, "y"},
		{"only the first entries are kept", many, MaxRejectedTargets, "no compiler"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := helloRejected(tt.in)
			if len(got) != tt.wantCount {
				t.Fatalf("%d entries, want %d", len(got), tt.wantCount)
			}
			for _, r := range got {
				if len(r.GetReason()) > MaxRejectReasonBytes || !utf8.ValidString(r.GetReason()) || r.GetTargetId() == "" {
					t.Errorf("entry %q over the limits or invalid (%d bytes)", r.GetTargetId(), len(r.GetReason()))
				}
			}
			if tt.wantCount > 0 && got[0].GetReason() != tt.wantFirst {
				t.Errorf("first reason = %q, want %q", got[0].GetReason(), tt.wantFirst)
			}
		})
	}
	if many[0].GetReason() != "no compiler" {
		t.Error("the caller's entries were modified")
	}
}

func TestLabelsAreAddedToCopies(t *testing.T) {
	orig := []Target{testTarget()}
	got := withLabels(orig, []string{"fast", "donated-by-acme"})
	if l := got[0].Info.GetSystem().GetLabels(); len(l) != 2 || l[1] != "donated-by-acme" {
		t.Errorf("labels %q", l)
	}
	if len(orig[0].Info.GetSystem().GetLabels()) != 0 {
		t.Error("the caller's target was modified")
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}
