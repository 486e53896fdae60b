package farmtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeRoot writes root/etc/passwd and root/etc/group with one system user.
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\nkiln-buildserver:x:991:991:Kiln:/var/lib/kiln/buildserver:/usr/sbin/nologin\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nkiln-buildserver:x:991:\n"), 0o644)
	return root
}

func TestUnitSpec_PackagedBuildserverUnit_EveryOptionApplied(t *testing.T) {
	mod, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUnit(filepath.Join(mod, "packaging/systemd/kiln-buildserver.service"))
	if err != nil {
		t.Fatal(err)
	}
	s, stop, err := u.spec(fakeRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if s.UID != 991 || s.GID != 991 || !s.NoNewPrivs || !s.DropCaps || !s.Strict || !s.ProtectHome || !s.PrivateTmp ||
		!s.PrivateDevices || !s.ProtectCgroups || !s.ProtectModules || !s.NewUTS || s.UMask != 0o077 ||
		!slices.Equal(s.ReadWritePaths, []string{"/var/lib/kiln/buildserver"}) || stop != 90*time.Second ||
		!slices.Contains(s.Env, "HOME=/var/lib/kiln/buildserver") ||
		!slices.Equal(s.Argv, []string{"/usr/bin/buildserver", "--config", "/etc/kiln/buildserver.conf"}) {
		t.Errorf("spec %+v, stop %s: not what the unit says", s, stop)
	}
}

func TestUnitSpec_OptionNotEmulated_Refused(t *testing.T) {
	for _, setting := range []string{"ProtectKernelTunables=yes", "SystemCallFilter=@system-service", "KillMode=control-group",
		"ProtectSystem=full", "ExecStart=/bin/sh -c 'echo $HOME'", "CapabilityBoundingSet=CAP_SYS_ADMIN", "EnvironmentFile=/etc/x"} {
		t.Run(setting, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.service")
			text := "[Service]\nUser=kiln-buildserver\nExecStart=/usr/bin/true\n" + setting + "\n"
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			u, err := ParseUnit(p)
			if err != nil {
				t.Fatal(err)
			}
			key, _, _ := strings.Cut(setting, "=")
			if _, _, err := u.spec(fakeRoot(t)); err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("%s: err = %v, want a refusal naming it", setting, err)
			}
		})
	}
}
