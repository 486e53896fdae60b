package cas

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestVerificationsSavedAtAStopAreTrustedByTheNextOpenWhileTheFileIsUnchanged(t *testing.T) {
	skipUnlessIdentified(t)
	noSkew := time.Duration(0)
	data := bytes.Repeat([]byte("artifact "), 10000)
	s := openStore(t)
	sha := putBlob(t, s, data) // the Writer's own verification is remembered
	other := putBlob(t, s, []byte("another blob, changed after the save"))
	if err := s.SaveMemo(); err != nil {
		t.Fatal(err)
	}

	restarted := reopen(t, s, &noSkew)
	if n, err := readHashed(t, restarted, sha); err != nil || n != 0 {
		t.Fatalf("first read after a restart hashed %d bytes with sha256, %v; want none (CRC-32C)", n, err)
	}
	// A file changed after the save (its ctime moves) is hashed again.
	p := restarted.path(other)
	waitCtimeMoves(t, p, func() {
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	again := reopen(t, s, &noSkew)
	if n, err := readHashed(t, again, other); err != nil || n == 0 {
		t.Fatalf("a blob changed after the save: hashed %d bytes, %v; want a sha256 read", n, err)
	}

	// Saved verifications still expire: an hour later they are not trusted.
	late := time.Hour + time.Minute
	if n, err := readHashed(t, reopen(t, s, &late), sha); err != nil || n != int64(len(data)) {
		t.Fatalf("an hour after its verification: hashed %d bytes, %v; want all %d", n, err, len(data))
	}
}

func TestADamagedMemoFileIsIgnoredWholeAndNothingIsReportedCorrupt(t *testing.T) {
	skipUnlessIdentified(t)
	noSkew := time.Duration(0)
	data := bytes.Repeat([]byte("blob "), 5000)
	s := openStore(t)
	sha := putBlob(t, s, data)
	if err := s.SaveMemo(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), memoFileName)
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, damaged := range map[string][]byte{
		"a flipped byte in an entry": flip(saved, len(memoMagic)+70),
		"truncated":                  saved[:len(saved)-3],
		"another file":               []byte("not a memo at all"),
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			s2 := reopen(t, s, &noSkew)
			if n, err := readHashed(t, s2, sha); err != nil || n != int64(len(data)) {
				t.Fatalf("read with a damaged memo: hashed %d bytes, %v; want a clean sha256 read of %d", n, err, len(data))
			}
		})
	}
}

// flip returns a copy of b with the byte at i inverted.
func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}

// waitCtimeMoves repeats change until the file's ctime differs from before
// (a change within the same clock tick leaves it), bounded by a deadline.
func waitCtimeMoves(t *testing.T, path string, change func()) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := statID(fi)
	deadline := time.Now().Add(10 * time.Second)
	for {
		change()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if now, _ := statID(fi); now.ctime != before.ctime {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the file's ctime never moved")
		}
		time.Sleep(time.Millisecond)
	}
}

// A memo file of the first format (file identities as five varints), as a
// metaserver of the previous release saved it, is still trusted.
func TestAMemoFileOfVersion1IsStillRead(t *testing.T) {
	skipUnlessIdentified(t)
	noSkew := time.Duration(0)
	data := bytes.Repeat([]byte("old release "), 5000)
	s := openStore(t)
	sha := putBlob(t, s, data)
	id := fileIDOf(t, s.path(sha))
	s.memo.mu.Lock()
	v := s.memo.m[sha]
	s.memo.mu.Unlock()
	buf := []byte(memoMagicV1 + sha)
	for _, x := range []uint64{id.dev, id.ino, uint64(id.size), uint64(id.mtime), uint64(id.ctime), uint64(v.crc), uint64(v.at.UnixNano())} {
		buf = binary.AppendUvarint(buf, x)
	}
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
	if err := os.WriteFile(filepath.Join(s.Dir(), memoFileName), buf, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := readHashed(t, reopen(t, s, &noSkew), sha); err != nil || n != 0 {
		t.Fatalf("read after loading a version-1 memo: hashed %d bytes, %v; want none", n, err)
	}
	// The same file with its CRC-32C off by one is ignored whole.
	buf[len(buf)-1] ^= 1
	if err := os.WriteFile(filepath.Join(s.Dir(), memoFileName), buf, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := readHashed(t, reopen(t, s, &noSkew), sha); err != nil || n != int64(len(data)) {
		t.Fatalf("read after a damaged version-1 memo: hashed %d bytes, %v; want all %d", n, err, len(data))
	}
}

// A verification recorded while the clock ran ahead (then stepped back by
// NTP), or a memo file whose times were set in the future, must not be
// trusted beyond the reverification period: an entry from the future is
// not trusted at all.
func TestAVerificationFromTheFutureIsNotTrusted(t *testing.T) {
	skipUnlessIdentified(t)
	data := bytes.Repeat([]byte("artifact "), 10000)
	s := openStore(t)
	s.memo.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	sha := putBlob(t, s, data)
	if err := s.SaveMemo(); err != nil {
		t.Fatal(err)
	}
	// The clock set right, two hours later: the verification is two
	// hours old by the clock that made it, yet stamped 46 hours ahead.
	later := 2 * time.Hour
	if n, err := readHashed(t, reopen(t, s, &later), sha); err != nil || n != int64(len(data)) {
		t.Fatalf("read of a blob whose verification is stamped 46 hours ahead: hashed %d bytes, %v; want all %d", n, err, len(data))
	}
}
