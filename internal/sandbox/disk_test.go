package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDiskUsageCountsAllocatedBlocksBelowEveryPath(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deep, "data"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// A sparse file counts only what it really uses.
	if err := os.WriteFile(filepath.Join(dir, "sparse"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "sparse"), 1<<30); err != nil {
		t.Fatal(err)
	}
	// A symbolic link is not followed.
	if err := os.Symlink("/usr", filepath.Join(dir, "usr")); err != nil {
		t.Fatal(err)
	}
	used, err := DiskUsage(dir, filepath.Join(dir, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	if used < 1<<20 || used > 2<<20 {
		t.Errorf("DiskUsage = %d bytes, want about 1 MiB", used)
	}
}

// diskFiller writes 1 MiB files until stopped, never one large file.
const diskFiller = `i=0; while :; do head -c 1048576 /dev/zero > f$i || exit 9; i=$((i+1)); done`

func TestStepOverItsDiskLimitIsKilledAtOnce(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			dir := t.TempDir()
			other := t.TempDir()
			limit := DiskLimit{Paths: []string{dir, other}, MaxBytes: 8 << 20, Interval: 20 * time.Millisecond}
			start := time.Now()
			out, err := run(t, rc.r, Step{Dir: dir, Writable: []string{other}, Command: diskFiller, Disk: limit,
				Timeout: 30 * time.Second})
			var de *DiskError
			if !errors.As(err, &de) || !de.OverCap() || de.MaxBytes != limit.MaxBytes {
				t.Fatalf("Run: %v (%q); want a DiskError over the cap", err, out)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("the step ran %s before it was stopped", took)
			}
			want := fmt.Sprintf(`step "test" stopped: the build holds %d bytes on disk, more than its limit of %d`, de.Used, limit.MaxBytes)
			if err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			// Nothing writes any more once Run returned.
			used1, _ := DiskUsage(dir)
			time.Sleep(100 * time.Millisecond)
			if used2, _ := DiskUsage(dir); used2 != used1 {
				t.Errorf("the build directory grew from %d to %d bytes after Run returned", used1, used2)
			}
		})
	}
}

func TestStepIsStoppedWhenTheFileSystemRunsLow(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			dir := t.TempDir()
			// No file system has an exabyte free: the first check fails.
			limit := DiskLimit{Paths: []string{dir}, MinFreeBytes: 1 << 60, Interval: 20 * time.Millisecond}
			out, err := run(t, rc.r, Step{Dir: dir, Command: "sleep 20", Disk: limit, Timeout: 30 * time.Second})
			var de *DiskError
			if !errors.As(err, &de) || de.OverCap() || de.MinFreeBytes != 1<<60 || de.Free <= 0 {
				t.Fatalf("Run: %v (%q); want a DiskError for the reserve", err, out)
			}
		})
	}
}

func TestStepWithinItsDiskLimitRunsNormally(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			dir := t.TempDir()
			limit := DiskLimit{Paths: []string{dir}, MaxBytes: 64 << 20, Interval: 10 * time.Millisecond}
			out, err := run(t, rc.r, Step{Dir: dir, Disk: limit,
				Command: "head -c 1048576 /dev/zero > f; sleep 0.2; echo done"})
			if err != nil || out != "done\n" {
				t.Fatalf("Run: %v (%q); want success", err, out)
			}
		})
	}
}
