package sysinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// TestDiscover_OffersToolchainsWithTheirEmulatorAndSaysWhyNotTheOthers:
// with a PATH holding a cross gcc whose qemu exists and one whose qemu
// does not, the first is a candidate and the second is skipped with the
// package that adds its emulator.
func TestDiscover_OffersToolchainsWithTheirEmulatorAndSaysWhyNotTheOthers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"s390x-linux-gnu-gcc", "qemu-s390x", "m68k-linux-gnu-gcc", "cc", "x86_64-linux-gnu-gcc", "arm-none-eabi-gcc"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	specs, skipped := Discover()
	var ids []string
	for _, s := range specs {
		ids = append(ids, s.ID)
	}
	if !slices.Equal(ids, []string{"native", "cross:s390x-linux-gnu"}) {
		t.Errorf("candidates %v, want native and cross:s390x-linux-gnu (no host triple, no bare-metal triple)", ids)
	}
	var m68k *Skipped
	for i := range skipped {
		if skipped[i].ID == "cross:m68k-linux-gnu" {
			m68k = &skipped[i]
		}
	}
	if m68k == nil || !slices.Contains(m68k.Install, "qemu-user") {
		t.Errorf("skipped %+v, want cross:m68k-linux-gnu for want of qemu-m68k", skipped)
	}
}

// TestDiscover_OnThisMachine: every candidate on this machine's PATH can be
// parsed back, and the native one is there when a compiler is.
func TestDiscover_OnThisMachine(t *testing.T) {
	specs, _ := Discover()
	for _, s := range specs {
		if _, err := ParseTarget(s.ID); err != nil {
			t.Errorf("candidate %q does not parse: %v", s.ID, err)
		}
	}
	if _, err := exec.LookPath("cc"); err == nil && (len(specs) == 0 || specs[0].ID != "native") {
		t.Errorf("candidates %v lack native", specs)
	}
}
