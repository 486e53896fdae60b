package e2e

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// privilegeAttacks is one build step trying, as issue 13 found a build on
// a root volunteer could, to take the machine: remount / writable and
// write to the host, use capabilities, make a user namespace to gain
// some, read the volunteer's token and data directory, plant a hook in its
// git mirrors, and connect to an owner-only admin socket. Each success
// prints PWNED; the step itself always exits 0 so that the log is whole.
const privilegeAttacks = `
echo "id: $(id)"
grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status
if mount -o remount,bind,rw / 2>/dev/null; then echo "PWNED remount"; fi
if umount -l /tmp 2>/dev/null; then echo "PWNED umount"; fi
if touch "$HOST_MARK" 2>/dev/null; then echo "PWNED host write"; fi
if mknod /tmp/kmem c 1 2 2>/dev/null; then echo "PWNED mknod"; fi
if unshare -Ur true 2>/dev/null; then echo "PWNED userns"; fi
if chown 0:0 . 2>/dev/null; then echo "PWNED chown"; fi
for f in "$DATA/token" "$DATA"/mirrors/* "$SECRET_FILE"; do
  if [ -e "$f" ] && cat "$f" >/dev/null 2>&1; then echo "PWNED read $f"; fi
done
if ls "$DATA/mirrors" 2>/dev/null | grep -q .; then echo "PWNED list mirrors"; fi
for m in "$DATA"/mirrors/*; do
  if [ -d "$m" ] && mkdir -p "$m/hooks" 2>/dev/null && printf '#!/bin/sh\ntouch %s\n' "$HOOK_MARK" > "$m/hooks/reference-transaction" 2>/dev/null; then echo "PWNED hook $m"; fi
done
if python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$ADMIN_SOCK" 2>/dev/null; then echo "PWNED admin socket"; fi
echo attacks-done > attacks.txt
`

// TestHostileABuildHoldsNoPrivilegeOnItsVolunteer runs the attacks on a
// build server running as root and, when the test is root, on one running
// as an unprivileged user: each is refused, nothing appears on the host,
// and the build server goes on building cleanly.
func TestHostileABuildHoldsNoPrivilegeOnItsVolunteer(t *testing.T) {
	users := []string{"the test's user"}
	if os.Geteuid() == 0 {
		users = append(users, "nobody")
	}
	for _, who := range users {
		t.Run("buildserver as "+who, func(t *testing.T) {
			var cred *syscall.Credential
			if who == "nobody" {
				cred = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
			}
			privilegeAttack(t, cred)
		})
	}
}

func privilegeAttack(t *testing.T, cred *syscall.Credential) {
	h := newHostileFarmAs(t, cred)
	// An owner-only socket like the metaserver's admin.sock, in a
	// directory the build can see.
	sockDir := hostileVarTmpDir(t, "kiln-e2e-admin-")
	os.Chmod(sockDir, 0o755)
	sock := filepath.Join(sockDir, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	os.Chmod(sock, 0o600)
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	markDir := hostileVarTmpDir(t, "kiln-e2e-mark-")
	os.Chmod(markDir, 0o755)
	hostMark := filepath.Join(markDir, "host-write")
	hookMark := filepath.Join(markDir, "hook-ran")

	step := "export DATA=" + h.dataDir + " SECRET_FILE=" + filepath.Join(h.home, ".kiln-secret") +
		" HOST_MARK=" + hostMark + " HOOK_MARK=" + hookMark + " ADMIN_SOCK=" + sock + "\n" + privilegeAttacks
	rev := h.commit(t, "privilege", "60s", "attacks.txt", step)
	out, log := h.build(t, rev)
	t.Logf("build %d %s; log:\n%s", out.BuildID, out.State, hostileTail(log))
	if out.State != "succeeded" || !strings.Contains(log, "id: uid=") {
		t.Fatalf("the attack build did not run to its end: %+v", out)
	}
	// The log shows the step's script too: only output lines count.
	if pwned := regexp.MustCompile(`(?m)^PWNED.*$`).FindAllString(log, -1); len(pwned) > 0 {
		t.Errorf("a build step gained privilege: %q", pwned)
	}
	if strings.Contains(log, "uid=0(") {
		t.Errorf("a build step ran as uid 0:\n%s", log)
	}
	if !strings.Contains(log, "CapEff:\t0000000000000000") || !strings.Contains(log, "CapBnd:\t0000000000000000") {
		t.Errorf("a build step holds capabilities:\n%s", log)
	}
	select {
	case <-accepted:
		t.Error("a build step connected to an owner-only socket")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := os.Stat(hostMark); err == nil {
		t.Error("a build step wrote to the host")
	}
	hooks, _ := filepath.Glob(filepath.Join(h.dataDir, "mirrors", "*", "hooks", "reference-transaction"))
	if len(hooks) > 0 {
		t.Errorf("a build step planted hooks in the build server's mirrors: %v", hooks)
	}
	// The next build fetches the mirror again and runs cleanly.
	h.expectBuildserverGoesOn(t)
	if _, err := os.Stat(hookMark); err == nil {
		t.Error("a hook planted by a build ran")
	}
}
