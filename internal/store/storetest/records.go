package storetest

import (
	"errors"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// nextIDs draws n values of sequence in one Update.
func (h *harness) nextIDs(sequence string, n int) []uint64 {
	h.t.Helper()
	var ids []uint64
	h.update(func(tx store.Tx) error {
		ids = ids[:0]
		for range n {
			id, err := tx.NextID(sequence)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	return ids
}

var sequenceCases = []testCase{
	{"a sequence starts at 1 and counts up across transactions", func(t *testing.T, h *harness) {
		wantIDs(t, "first Update", h.nextIDs("build", 3), []uint64{1, 2, 3})
		wantIDs(t, "second Update", h.nextIDs("build", 2), []uint64{4, 5})
	}},
	{"each sequence counts on its own", func(t *testing.T, h *harness) {
		h.nextIDs("build", 5)
		for _, name := range []string{"attempt", "request", "outbox"} {
			wantIDs(t, name, h.nextIDs(name, 1), []uint64{1})
		}
		wantIDs(t, "build again", h.nextIDs("build", 1), []uint64{6})
	}},
	{"sequences survive a reopen", func(t *testing.T, h *harness) {
		h.nextIDs("build", 2)
		h.nextIDs("outbox", 7)
		h.reopen()
		wantIDs(t, "build", h.nextIDs("build", 1), []uint64{3})
		wantIDs(t, "outbox", h.nextIDs("outbox", 1), []uint64{8})
	}},
	{"a value handed out by a committed transaction is never handed out again", func(t *testing.T, h *harness) {
		first := h.nextIDs("request", 1)[0]
		errRollback := errors.New("roll back")
		_ = h.s.Update(func(tx store.Tx) error {
			_, _ = tx.NextID("request")
			return errRollback
		})
		if next := h.nextIDs("request", 1)[0]; next <= first {
			t.Fatalf("after %d the sequence handed out %d", first, next)
		}
	}},
}

func project(name string) *store.Project {
	return &store.Project{Project: &kilnv1.Project{Name: name, GitUrl: "https://example.invalid/" + name + ".git"}, CreatedAt: ts(0)}
}

var projectCases = []testCase{
	{"a missing project is ErrNotFound", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.Project("nope")
			wantErr(t, "Project", err, store.ErrNotFound)
			return nil
		})
	}},
	{"a created project reads back equal", func(t *testing.T, h *harness) {
		want := project("hello")
		h.update(func(tx store.Tx) error { return tx.CreateProject(want) })
		h.view(func(tx store.Tx) error {
			got, err := tx.Project("hello")
			must(t, err)
			wantEqual(t, "Project", got, want)
			return nil
		})
	}},
	{"creating a project twice is ErrExists and keeps the first", func(t *testing.T, h *harness) {
		first := project("hello")
		h.update(func(tx store.Tx) error { return tx.CreateProject(first) })
		second := project("hello")
		second.Project.GitUrl = "https://example.invalid/other.git"
		err := h.s.Update(func(tx store.Tx) error { return tx.CreateProject(second) })
		wantErr(t, "second CreateProject", err, store.ErrExists)
		h.view(func(tx store.Tx) error {
			got, err := tx.Project("hello")
			must(t, err)
			wantEqual(t, "Project", got, first)
			return nil
		})
	}},
	{"projects are listed by name", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error {
			for _, n := range []string{"zlib", "awk", "make"} {
				if err := tx.CreateProject(project(n)); err != nil {
					return err
				}
			}
			return nil
		})
		h.view(func(tx store.Tx) error {
			ps, err := tx.Projects()
			must(t, err)
			var names []string
			for _, p := range ps {
				names = append(names, p.GetProject().GetName())
			}
			if len(names) != 3 || names[0] != "awk" || names[1] != "make" || names[2] != "zlib" {
				t.Fatalf("Projects: got %v, want [awk make zlib]", names)
			}
			return nil
		})
	}},
}

func server(name, hash string) *store.BuildServer {
	return &store.BuildServer{Name: name, TokenHash: hash, CreatedAt: ts(0), BuildsSucceeded: 3}
}

// wantServerByHash checks which server (or none, "") the hash finds.
func wantServerByHash(t *testing.T, tx store.Tx, hash, name string) {
	t.Helper()
	got, err := tx.BuildServerByTokenHash(hash)
	if name == "" {
		wantErr(t, "BuildServerByTokenHash("+hash+")", err, store.ErrNotFound)
		return
	}
	must(t, err)
	if got.GetName() != name {
		t.Fatalf("BuildServerByTokenHash(%s): got %q, want %q", hash, got.GetName(), name)
	}
}

var buildServerCases = []testCase{
	{"a missing build server is ErrNotFound by name and by token hash", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.BuildServer("nope")
			wantErr(t, "BuildServer", err, store.ErrNotFound)
			wantServerByHash(t, tx, "feed", "")
			return nil
		})
	}},
	{"a created build server is found by name and by token hash", func(t *testing.T, h *harness) {
		want := server("alpha", "aaaa")
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(want) })
		h.view(func(tx store.Tx) error {
			got, err := tx.BuildServer("alpha")
			must(t, err)
			wantEqual(t, "BuildServer", got, want)
			wantServerByHash(t, tx, "aaaa", "alpha")
			return nil
		})
	}},
	{"creating a build server twice is ErrExists", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(server("alpha", "aaaa")) })
		err := h.s.Update(func(tx store.Tx) error { return tx.CreateBuildServer(server("alpha", "bbbb")) })
		wantErr(t, "second CreateBuildServer", err, store.ErrExists)
		h.view(func(tx store.Tx) error {
			wantServerByHash(t, tx, "aaaa", "alpha")
			wantServerByHash(t, tx, "bbbb", "")
			return nil
		})
	}},
	{"two build servers cannot share a token hash", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(server("alpha", "aaaa")) })
		err := h.s.Update(func(tx store.Tx) error { return tx.CreateBuildServer(server("beta", "aaaa")) })
		wantErr(t, "CreateBuildServer with a taken hash", err, store.ErrExists)
		h.view(func(tx store.Tx) error {
			wantServerByHash(t, tx, "aaaa", "alpha")
			return nil
		})
	}},
	{"a build server read, changed and put in one transaction keeps the change; a hash taken from another is ErrExists", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(server("alpha", "aaaa")) })
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(server("beta", "bbbb")) })
		h.update(func(tx store.Tx) error {
			for range 3 {
				b, err := tx.BuildServer("alpha")
				if err != nil {
					return err
				}
				b.BuildsSucceeded++
				if err := tx.PutBuildServer(b); err != nil {
					return err
				}
			}
			return nil
		})
		err := h.s.Update(func(tx store.Tx) error {
			b, err := tx.BuildServer("beta")
			if err != nil {
				return err
			}
			b.TokenHash = "aaaa"
			return tx.PutBuildServer(b)
		})
		wantErr(t, "PutBuildServer with alpha's hash", err, store.ErrExists)
		h.view(func(tx store.Tx) error {
			got, err := tx.BuildServer("alpha")
			must(t, err)
			if got.GetBuildsSucceeded() != 6 {
				t.Fatalf("alpha's builds succeeded: %d, want 3 + 3", got.GetBuildsSucceeded())
			}
			wantServerByHash(t, tx, "aaaa", "alpha")
			wantServerByHash(t, tx, "bbbb", "beta")
			return nil
		})
	}},
	{"putting an unknown build server is ErrNotFound", func(t *testing.T, h *harness) {
		err := h.s.Update(func(tx store.Tx) error { return tx.PutBuildServer(server("ghost", "cccc")) })
		wantErr(t, "PutBuildServer", err, store.ErrNotFound)
	}},
	{"a new token hash replaces the old one in the lookup", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(server("alpha", "aaaa")) })
		h.update(func(tx store.Tx) error {
			b, err := tx.BuildServer("alpha")
			if err != nil {
				return err
			}
			b.TokenHash = "dddd"
			b.Revoked = true
			return tx.PutBuildServer(b)
		})
		h.view(func(tx store.Tx) error {
			wantServerByHash(t, tx, "aaaa", "")
			wantServerByHash(t, tx, "dddd", "alpha")
			got, err := tx.BuildServer("alpha")
			must(t, err)
			if !got.GetRevoked() {
				t.Fatal("PutBuildServer did not store revoked")
			}
			return nil
		})
	}},
	{"a put keeping the token hash stores the record and keeps the lookup", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(server("alpha", "aaaa")) })
		h.update(func(tx store.Tx) error {
			b, err := tx.BuildServer("alpha")
			if err != nil {
				return err
			}
			b.BuildsSucceeded++
			return tx.PutBuildServer(b)
		})
		h.view(func(tx store.Tx) error {
			got, err := tx.BuildServer("alpha")
			must(t, err)
			if got.GetBuildsSucceeded() != 4 {
				t.Fatalf("BuildsSucceeded = %d, want 4", got.GetBuildsSucceeded())
			}
			wantServerByHash(t, tx, "aaaa", "alpha")
			return nil
		})
	}},
	{"a put may not take another server's token hash", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error {
			if err := tx.CreateBuildServer(server("alpha", "aaaa")); err != nil {
				return err
			}
			return tx.CreateBuildServer(server("beta", "bbbb"))
		})
		err := h.s.Update(func(tx store.Tx) error { return tx.PutBuildServer(server("beta", "aaaa")) })
		wantErr(t, "PutBuildServer with alpha's hash", err, store.ErrExists)
		h.view(func(tx store.Tx) error {
			wantServerByHash(t, tx, "aaaa", "alpha")
			wantServerByHash(t, tx, "bbbb", "beta")
			return nil
		})
	}},
	{"clearing the token hash removes it from the lookup", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(server("alpha", "aaaa")) })
		h.update(func(tx store.Tx) error { return tx.PutBuildServer(server("alpha", "")) })
		h.view(func(tx store.Tx) error {
			wantServerByHash(t, tx, "aaaa", "")
			return nil
		})
	}},
	{"build servers are listed by name", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error {
			for i, n := range []string{"gamma", "alpha", "beta"} {
				if err := tx.CreateBuildServer(server(n, string(rune('a'+i))+"hash")); err != nil {
					return err
				}
			}
			return nil
		})
		h.view(func(tx store.Tx) error {
			bs, err := tx.BuildServers()
			must(t, err)
			var names []string
			for _, b := range bs {
				names = append(names, b.GetName())
			}
			if len(names) != 3 || names[0] != "alpha" || names[1] != "beta" || names[2] != "gamma" {
				t.Fatalf("BuildServers: got %v, want [alpha beta gamma]", names)
			}
			return nil
		})
	}},
}

var pinCases = []testCase{
	{"a missing pin is ErrNotFound", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.Pin("v1")
			wantErr(t, "Pin", err, store.ErrNotFound)
			return nil
		})
	}},
	{"a pin name always resolves to the bytes it was created with", func(t *testing.T, h *harness) {
		first := &store.Pin{Name: "hello-1.0", BuildId: 7, Sha256: "aa", CacheKey: "k1", CreatedAt: ts(0)}
		h.update(func(tx store.Tx) error { return tx.CreatePin(first) })
		second := &store.Pin{Name: "hello-1.0", BuildId: 8, Sha256: "bb", CacheKey: "k2", CreatedAt: ts(1)}
		err := h.s.Update(func(tx store.Tx) error { return tx.CreatePin(second) })
		wantErr(t, "second CreatePin", err, store.ErrExists)
		h.view(func(tx store.Tx) error {
			got, err := tx.Pin("hello-1.0")
			must(t, err)
			wantEqual(t, "Pin", got, first)
			return nil
		})
	}},
	{"Pins lists every pin in name order and stops on ErrStop", func(t *testing.T, h *harness) {
		for _, n := range []string{"zeta", "alpha", "mid"} {
			h.update(func(tx store.Tx) error {
				return tx.CreatePin(&store.Pin{Name: n, BuildId: 7, Sha256: "aa", CacheKey: "k1", CreatedAt: ts(0)})
			})
		}
		h.view(func(tx store.Tx) error {
			var names []string
			must(t, tx.Pins(func(p *store.Pin) error { names = append(names, p.GetName()); return nil }))
			if got := strings.Join(names, " "); got != "alpha mid zeta" {
				t.Fatalf("pins %q, want alpha mid zeta", got)
			}
			names = nil
			must(t, tx.Pins(func(p *store.Pin) error { names = append(names, p.GetName()); return store.ErrStop }))
			if got := strings.Join(names, " "); got != "alpha" {
				t.Fatalf("pins before the stop %q, want alpha", got)
			}
			return nil
		})
	}},
}

var enrollTokenCases = []testCase{
	{"a missing enrollment token is ErrNotFound", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.EnrollToken("abc")
			wantErr(t, "EnrollToken", err, store.ErrNotFound)
			return nil
		})
	}},
	{"an enrollment token is created once and marked used by Put", func(t *testing.T, h *harness) {
		e := &store.EnrollToken{TokenHash: "h1", CreatedAt: ts(0), ExpiresAt: ts(100)}
		h.update(func(tx store.Tx) error { return tx.CreateEnrollToken(e) })
		err := h.s.Update(func(tx store.Tx) error { return tx.CreateEnrollToken(&store.EnrollToken{TokenHash: "h1"}) })
		wantErr(t, "second CreateEnrollToken", err, store.ErrExists)
		used := &store.EnrollToken{TokenHash: "h1", CreatedAt: ts(0), ExpiresAt: ts(100), UsedAt: ts(5), UsedBy: "vol"}
		h.update(func(tx store.Tx) error { return tx.PutEnrollToken(used) })
		h.reopen()
		h.view(func(tx store.Tx) error {
			got, err := tx.EnrollToken("h1")
			must(t, err)
			wantEqual(t, "EnrollToken", got, used)
			return nil
		})
		err = h.s.Update(func(tx store.Tx) error { return tx.PutEnrollToken(&store.EnrollToken{TokenHash: "other"}) })
		wantErr(t, "Put of a missing token", err, store.ErrNotFound)
	}},
}

var blobCases = []testCase{
	{"an inline blob round-trips, survives a reopen and is deleted once", func(t *testing.T, h *harness) {
		data := []byte("artifact bytes")
		h.update(func(tx store.Tx) error { return tx.PutBlob("aa11", data) })
		h.reopen()
		h.view(func(tx store.Tx) error {
			got, err := tx.Blob("aa11")
			must(t, err)
			if string(got) != string(data) {
				t.Fatalf("Blob = %q, want %q", got, data)
			}
			_, err = tx.Blob("bb22")
			wantErr(t, "missing Blob", err, store.ErrNotFound)
			return nil
		})
		h.update(func(tx store.Tx) error { return tx.DeleteBlob("aa11") })
		err := h.s.Update(func(tx store.Tx) error { return tx.DeleteBlob("aa11") })
		wantErr(t, "second DeleteBlob", err, store.ErrNotFound)
	}},
}

var logCases = []testCase{
	{"an attempt's log round-trips, survives a reopen, is replaced whole and is told apart by attempt", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error { return tx.PutLog(7, 1, []byte("first attempt\n")) })
		h.update(func(tx store.Tx) error { return tx.PutLog(7, 2, []byte("second")) })
		h.update(func(tx store.Tx) error { return tx.PutLog(7, 2, []byte("second attempt\n")) })
		h.reopen()
		h.view(func(tx store.Tx) error {
			for attempt, want := range map[int]string{1: "first attempt\n", 2: "second attempt\n"} {
				got, err := tx.Log(7, attempt)
				must(t, err)
				if string(got) != want {
					t.Fatalf("Log(7, %d) = %q, want %q", attempt, got, want)
				}
			}
			_, err := tx.Log(7, 3)
			wantErr(t, "Log of an attempt without one", err, store.ErrNotFound)
			_, err = tx.Log(8, 1)
			wantErr(t, "Log of another build", err, store.ErrNotFound)
			return nil
		})
		if err := h.s.Update(func(tx store.Tx) error { return tx.PutLog(7, 0, []byte("x")) }); err == nil {
			t.Fatal("PutLog of attempt 0 succeeded")
		}
	}},
}
