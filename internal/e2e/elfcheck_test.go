package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// elfcheckS390x is what a machine that says it is s390x claims.
var elfcheckS390x = &kilnv1.SystemInfo{
	Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8,
	SizeofShort: 2, SizeofInt: 4, SizeofLong: 8, SizeofLongLong: 8, SizeofPointer: 8,
	Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0",
	Cpus: 1, MemoryBytes: 1 << 30,
}

// elfcheckAsk frees every constraint but the arch, which it pins to s390x.
var elfcheckAsk = []string{"--project", "auth", "--json", "--os", "any", "--arch", "s390x", "--endian", "any", "--data-model", "any", "--libc", "any"}

// elfcheckOpen opens a simulated build server's session whose one target
// claims to be s390x (authOpen with another Hello).
func elfcheckOpen(t *testing.T, f *farmtest.Farm, token string) *authSession {
	t.Helper()
	return elfcheckOpenAs(t, f, token, &kilnv1.Target{Id: "s390x", System: elfcheckS390x})
}

// elfcheckOpenAs opens a simulated build server's session offering target.
func elfcheckOpenAs(t *testing.T, f *farmtest.Farm, token string, target *kilnv1.Target) *authSession {
	t.Helper()
	s := &authSession{msgs: make(chan *kilnv1.SessionResponse, 64), ended: make(chan error, 1), auth: "Bearer " + token}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", s.auth))
	t.Cleanup(cancel)
	st, err := kilnv1.NewWorkerServiceClient(f.Conn()).Session(ctx)
	if err != nil {
		t.Fatalf("opening a session: %v", err)
	}
	hello := &kilnv1.Hello{Version: "e2e-simulated", Slots: 1, PublicKey: simulatedPub(), Targets: []*kilnv1.Target{target}}
	if err := st.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Hello{Hello: hello}}); err != nil {
		t.Fatalf("sending Hello: %v", err)
	}
	first, err := st.Recv()
	if err != nil || first.GetWelcome() == nil {
		t.Fatalf("answer to Hello: %v, %v; want a Welcome", first, err)
	}
	s.stream, s.name = st, first.GetWelcome().GetBuildServer()
	go func() {
		for {
			msg, err := st.Recv()
			if err != nil {
				s.ended <- err
				return
			}
			s.msgs <- msg
		}
	}()
	return s
}

// elfcheckArtifact is a tar.gz holding bin/hello, an ELF executable's
// header for machine, class and byte order.
func elfcheckArtifact(t *testing.T, m elf.Machine, c elf.Class, d elf.Data) []byte {
	t.Helper()
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS], h[elf.EI_DATA], h[elf.EI_VERSION] = byte(c), byte(d), 1
	var order binary.ByteOrder = binary.LittleEndian
	if d == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	order.PutUint16(h[16:], uint16(elf.ET_EXEC))
	order.PutUint16(h[18:], uint16(m))
	return elfcheckTarGz(t, h)
}

// elfcheckPE is a tar.gz holding bin/hello, the start of a PE file for
// the COFF machine with the optional header magic (0x10b PE32, 0x20b
// PE32+), as GNU ld lays it out.
func elfcheckPE(t *testing.T, machine, magic uint16) []byte {
	t.Helper()
	h := make([]byte, 0x200)
	copy(h, "MZ")
	binary.LittleEndian.PutUint32(h[0x3c:], 0x80)
	copy(h[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(h[0x84:], machine)
	binary.LittleEndian.PutUint16(h[0x98:], magic)
	return elfcheckTarGz(t, h)
}

// elfcheckTarGz is a tar.gz holding bin/hello with content h.
func elfcheckTarGz(t *testing.T, h []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "bin/hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(h))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(h); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// deliver uploads data for asg's attempt and reports it as the attempt's
// successful result; it returns the ResultAck.
func (s *authSession) deliver(t *testing.T, f *farmtest.Farm, asg *kilnv1.Assignment, data []byte) *kilnv1.ResultAck {
	t.Helper()
	header := authHeader(asg.GetAttemptId(), data)
	if err := authUpload(t, f, s.auth, header, data); err != nil {
		t.Fatalf("upload for attempt %d: %v", asg.GetAttemptId(), err)
	}
	return s.result(t, &kilnv1.AttemptResult{AttemptId: asg.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED,
		Artifact: &kilnv1.Artifact{Sha256: header.GetSha256(), Size: header.GetSize(), Files: []string{"bin/hello"}}})
}

// A volunteer that claims an s390x target and returns x86-64 code: the
// metaserver refuses the result, caches nothing, and an honest build server
// builds it.
func TestElfcheckAnArtifactForAnotherMachineIsRefusedAndBuiltElsewhere(t *testing.T) {
	f := authFarm(t)
	liar := elfcheckOpen(t, f, f.AddBuildServer("liar"))
	r := f.Startcompile(append(elfcheckAsk, "auth@example.com")...)
	expectExit(t, r, 0)
	id := parseResult(t, r).BuildID
	asg := liar.assignment(t)
	if asg.GetBuildId() != id {
		t.Fatalf("the liar got build %d, want %d", asg.GetBuildId(), id)
	}

	ack := liar.deliver(t, f, asg, elfcheckArtifact(t, elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB))
	want := "artifact does not match the target: bin/hello is x86_64 (64-bit little-endian), target is s390x (64-bit big-endian)"
	if ack.GetAccepted() || ack.GetReason() != want {
		t.Fatalf("ack of x86-64 code for s390x: %v; want refused with %q", ack, want)
	}
	b := f.GetBuild(t, id)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || b.GetArtifact() != nil || len(b.GetAttempts()) != 1 ||
		b.GetAttempts()[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REJECTED || b.GetAttempts()[0].GetReason() != want {
		t.Fatalf("after the refusal build %d is %s, artifact %v, attempts %v; want queued again after one REJECTED attempt", id, b.GetState(), b.GetArtifact(), b.GetAttempts())
	}
	if logs := f.Meta().Process.Logs(); !strings.Contains(logs, "the artifact does not match the target") || !strings.Contains(logs, "build_server=liar") {
		t.Fatal("the metaserver did not log the refusal with the build server's name")
	}
	// Not cached: the same request joins the queued build.
	again := parseResult(t, f.Startcompile(append(elfcheckAsk, "other@example.com")...))
	if again.Cached || again.BuildID != id {
		t.Fatalf("the same request after the refusal: %+v; want no cache hit, joined to build %d", again, id)
	}

	honest := elfcheckOpen(t, f, f.AddBuildServer("honest"))
	asg2 := honest.assignment(t)
	if asg2.GetBuildId() != id {
		t.Fatalf("the honest server got build %d, want %d", asg2.GetBuildId(), id)
	}
	good := elfcheckArtifact(t, elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB)
	if ack := honest.deliver(t, f, asg2, good); !ack.GetAccepted() {
		t.Fatalf("the honest s390x result was refused: %v", ack)
	}
	b = f.GetBuild(t, id)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || b.GetArtifact().GetSha256() != authHeader(0, good).GetSha256() ||
		b.GetAttempts()[len(b.GetAttempts())-1].GetBuildServer() != "honest" {
		t.Fatalf("build %d is %s with %v, attempts %v; want succeeded with the honest artifact", id, b.GetState(), b.GetArtifact(), b.GetAttempts())
	}
	if hit := parseResult(t, f.Startcompile(append(elfcheckAsk, "third@example.com")...)); !hit.Cached || hit.BuildID != id {
		t.Fatalf("the request after the honest build: %+v; want a cache hit on build %d", hit, id)
	}
}

// A volunteer that claims a Windows i686 target and returns an ELF file,
// or an x86-64 PE: both refused by the metaserver; an i686 PE is taken.
func TestElfcheckWindowsTargetRefusesELFAndAnotherMachinesPE(t *testing.T) {
	f := authFarm(t)
	win32 := &kilnv1.Target{Id: "cross:i686-w64-mingw32", System: &kilnv1.SystemInfo{
		Os: "windows", Arch: "i686", Endian: "little", DataModel: "ILP32", CharBit: 8,
		SizeofShort: 2, SizeofInt: 4, SizeofLong: 4, SizeofLongLong: 8, SizeofPointer: 4,
		Libc: "msvcrt", LibcVersion: "7.0", Compiler: "gcc", CompilerVersion: "12.0.0", Cpus: 1, MemoryBytes: 1 << 30,
	}}
	ask := []string{"--project", "auth", "--json", "--os", "windows", "--arch", "i686", "--endian", "any", "--data-model", "any", "--libc", "any", "win@example.com"}
	r := f.Startcompile(ask...)
	expectExit(t, r, 0)
	id := parseResult(t, r).BuildID
	for i, c := range []struct {
		data []byte
		want string
	}{
		{elfcheckArtifact(t, elf.EM_386, elf.ELFCLASS32, elf.ELFDATA2LSB),
			"artifact does not match the target: bin/hello is an ELF file for i686 (32-bit little-endian), target is windows i686 (PE32)"},
		{elfcheckPE(t, 0x8664, 0x20b), "artifact does not match the target: bin/hello is x86_64 (PE32+), target is windows i686 (PE32)"},
	} {
		liar := elfcheckOpenAs(t, f, f.AddBuildServer(fmt.Sprintf("liar-%d", i)), win32)
		asg := liar.assignment(t)
		if asg.GetBuildId() != id {
			t.Fatalf("liar %d got build %d, want %d", i, asg.GetBuildId(), id)
		}
		if ack := liar.deliver(t, f, asg, c.data); ack.GetAccepted() || ack.GetReason() != c.want {
			t.Fatalf("ack of liar %d: %v; want refused with %q", i, ack, c.want)
		}
		if b := f.GetBuild(t, id); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || b.GetArtifact() != nil {
			t.Fatalf("after liar %d's refusal build %d is %s with %v; want queued, no artifact", i, id, b.GetState(), b.GetArtifact())
		}
	}
	honest := elfcheckOpenAs(t, f, f.AddBuildServer("honest"), win32)
	asg := honest.assignment(t)
	if ack := honest.deliver(t, f, asg, elfcheckPE(t, 0x14c, 0x10b)); !ack.GetAccepted() {
		t.Fatalf("the honest i686 PE was refused: %v", ack)
	}
	if b := f.GetBuild(t, id); b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("build %d is %s after the honest result", id, b.GetState())
	}
}
