package cas

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// benchSize is the blob size of the throughput benchmarks.
const benchSize = 256 << 20

// BenchmarkPut stores a 256 MiB blob per iteration: hash, write, fsync,
// link, directory fsync. Each iteration writes different content (its first
// byte is the iteration number) so no Put is an idempotent no-op.
func BenchmarkPut(b *testing.B) {
	s := openStore(b)
	b.SetBytes(benchSize)
	i := 0
	for b.Loop() {
		i++
		r := io.MultiReader(&constReader{b: byte(i), n: 1}, &zeroReader{n: benchSize - 1})
		sha, _, err := s.Put(b.Context(), r, "", benchSize)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(b.Context(), sha); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkOpenRead reads and verifies a 256 MiB blob per iteration (from the
// page cache: the blob was just written).
func BenchmarkOpenRead(b *testing.B) {
	s := openStore(b)
	s.SetReverifyAfter(0) // sha256 on every read
	sha, _, err := s.Put(b.Context(), &zeroReader{n: benchSize}, "", benchSize)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, copyBufferSize)
	b.SetBytes(benchSize)
	for b.Loop() {
		r, _, err := s.Open(b.Context(), sha)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(discard{}, r, buf); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// BenchmarkOpenReadTrusted reads a blob verified before (by the Writer that
// stored it) and unchanged since: CRC-32C instead of sha256 (see memo.go).
func BenchmarkOpenReadTrusted(b *testing.B) {
	s := openStore(b)
	sha, _, err := s.Put(b.Context(), &zeroReader{n: benchSize}, "", benchSize)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, copyBufferSize)
	b.SetBytes(benchSize)
	for b.Loop() {
		r, _, err := s.Open(b.Context(), sha)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(discard{}, r, buf); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// BenchmarkRawFsyncWrite is the machine's baseline for BenchmarkPut: 256 MiB
// written to a file in 256 KiB writes and fsynced, without hashing.
func BenchmarkRawFsyncWrite(b *testing.B) {
	dir := b.TempDir()
	buf := make([]byte, copyBufferSize)
	b.SetBytes(benchSize)
	for b.Loop() {
		f, err := os.Create(filepath.Join(dir, "raw"))
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < benchSize; n += len(buf) {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		b.StopTimer()
		os.Remove(f.Name())
		b.StartTimer()
	}
}

type constReader struct {
	b byte
	n int
}

func (c *constReader) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.n)
	for i := range p[:n] {
		p[i] = c.b
	}
	c.n -= n
	return n, nil
}

// BenchmarkOpenReadTrustedMiBChunks reads a trusted blob the way the
// metaserver's download does: io.ReadFull into 1 MiB buffers.
func BenchmarkOpenReadTrustedMiBChunks(b *testing.B) {
	s := openStore(b)
	sha, _, err := s.Put(b.Context(), &zeroReader{n: benchSize}, "", benchSize)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	for b.Loop() {
		r, _, err := s.Open(b.Context(), sha)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := io.ReadFull(r, buf); err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		r.Close()
	}
}

// BenchmarkVerify verifies a 256 MiB blob (sha256, from the page cache).
func BenchmarkVerify(b *testing.B) {
	s := openStore(b)
	sha, _, err := s.Put(b.Context(), &zeroReader{n: benchSize}, "", benchSize)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	for b.Loop() {
		if err := s.Verify(b.Context(), sha); err != nil {
			b.Fatal(err)
		}
	}
}
