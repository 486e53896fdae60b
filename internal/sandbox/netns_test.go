package sandbox

import (
	"os"
	"strings"
	"testing"
)

func TestEveryBwrapStepGetsANetworkNamespaceOfItsOwnWithOnlyItsLoopbackUp(t *testing.T) {
	b := needBwrap(t)
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	// More steps than the pool holds, so some take namespaces made while
	// steps ran. A namespace no step used has received nothing on its
	// loopback; each step then sends something through it.
	for i := range 2*netPoolSize + 1 {
		out, err := run(t, b, Step{Command: `readlink /proc/self/ns/net; awk '$1 == "lo:" {print "received", $2}' /proc/net/dev; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); c=socket.create_connection(s.getsockname(), 3); c.sendall(b"x" * 1000); print("loopback works")'`})
		if err != nil {
			t.Fatalf("step %d: %v\n%s", i, err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 {
			t.Fatalf("step %d printed %q", i, out)
		}
		if lines[0] == host {
			t.Fatalf("step %d ran in the host's network namespace %s", i, host)
		}
		if lines[1] != "received 0" {
			t.Fatalf("step %d: its loopback had %q before the step; want a namespace no step used", i, lines[1])
		}
		if lines[2] != "lo" || lines[3] != "loopback works" {
			t.Fatalf("step %d: interfaces and loopback %q; want only lo, working", i, lines[2:])
		}
	}
}

func TestAPooledNetworkNamespaceBelongsToTheHostsUserNamespaceSoTheStepCannotReconfigureIt(t *testing.T) {
	b := needBwrap(t)
	if takeNetns() == nil {
		t.Skipf("no network namespaces made ahead of time here (%v): bwrap makes each step's", netPool.err)
	}
	// Taking a namespace means the pool works; the step's own attempt to
	// take its loopback down must fail.
	out, err := run(t, b, Step{Command: `python3 -c '
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifr = struct.pack("16sH14x", b"lo", 0)
try:
    fcntl.ioctl(s.fileno(), 0x8914, ifr)  # SIOCSIFFLAGS: lo down
    print("reconfigured")
except OSError as e:
    print("refused", e.errno)
'`})
	if err != nil || !strings.HasPrefix(out, "refused") {
		t.Fatalf("taking lo down from inside the step: %q, %v; want refused", out, err)
	}
}
