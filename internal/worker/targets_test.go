package worker

import (
	"context"
	"errors"
	"testing"

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
