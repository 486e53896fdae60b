package compilecli

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// fullBuild is a build with every kind of field set: scalars, enums,
// maps, repeated and nested messages, timestamps and bytes.
func fullBuild() *kilnv1.Build {
	at := timestamppb.New(time.Date(2026, 12, 6, 21, 0, 0, 123456789, time.UTC))
	art := &kilnv1.Artifact{Sha256: strings.Repeat("ab", 32), Size: 146, Files: []string{"out.txt", "bin/xz"}}
	return &kilnv1.Build{
		Id: 7, Project: "xz-utils", Revision: "main", Commit: strings.Repeat("c", 40),
		Options:     map[string]string{"n": "1", "cflags": "-O2 -g"},
		Constraints: &kilnv1.PlatformConstraints{Os: "linux", Arch: "s390x", Endian: "big", Libc: "glibc"},
		State:       kilnv1.BuildState_BUILD_STATE_SUCCEEDED, CreatedAt: at, StartedAt: at, FinishedAt: at,
		Attempts: []*kilnv1.Attempt{
			{Id: 1, BuildServer: "volunteer-0", TargetId: "native", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, Reason: "disconnected"},
			{Id: 2, BuildServer: "volunteer-1", TargetId: "s390x", Phase: kilnv1.Phase_PHASE_UPLOADING, StartedAt: at, FinishedAt: at,
				CompilerCache: &kilnv1.CompilerCacheStats{Hits: 3, Misses: 1}},
		},
		Platform: &kilnv1.SystemInfo{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8, SizeofLong: 8,
			Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0",
			Tools: map[string]string{"make": "4.3", "cmake": "3.25.1"}, Cpus: 2, MemoryBytes: 1 << 34, Emulated: true},
		Artifact: art, LogSize: 4096, Failure: "", FailingStep: "make check", WaitingReasons: []string{"no build server offers s390x"},
		QueuePosition: 2, Waiters: 3, CacheKey: strings.Repeat("k", 64), Recipe: "autotools",
		Verification:         kilnv1.Verification_VERIFICATION_VERIFIED,
		AgreeingBuildServers: []string{"volunteer-1", "volunteer-2"},
		Replicas:             []*kilnv1.Replica{{AttemptId: 2, BuildServer: "volunteer-1", Operator: "op", Artifact: art, Statement: []byte{0, 1, 2, 0xff}}},
		Quorum:               2,
	}
}

// codecMessages are the messages a startcompile process decodes, full.
func codecMessages() []proto.Message {
	b := fullBuild()
	return []proto.Message{
		&kilnv1.SubmitResponse{Build: b, Cached: true, RequestId: 9},
		&kilnv1.WatchBuildResponse{Build: b, LogOffset: 12, Log: []byte("[kiln] recipe: autotools\n")},
		&kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Header{Header: &kilnv1.DownloadHeader{BuildId: 7, Artifact: b.GetArtifact(), Platform: b.GetPlatform()}}},
		&kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Data{Data: make([]byte, 70000)}},
		&kilnv1.SubmitRequest{Project: "xz-utils", Revision: "v5.4.1..main", Constraints: b.GetConstraints(), Options: b.GetOptions(), Email: "a@example.com"},
	}
}

func testCodec() encoding.CodecV2 {
	return vtCodec{fallback: encoding.GetCodecV2("proto")}
}

func codecDecode(t *testing.T, c encoding.CodecV2, wire []byte, into proto.Message) {
	t.Helper()
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, into); err != nil {
		t.Fatalf("codec decoding %T: %v", into, err)
	}
}

// Both directions agree with protobuf's own encoding: what the codec
// writes protobuf reads back equal, and the other way round, with unknown
// fields (from a newer metaserver) kept.
func TestTheCodecAgreesWithProtobufBothWays(t *testing.T) {
	c := testCodec()
	for _, m := range codecMessages() {
		out, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("codec encoding %T: %v", m, err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(out.Materialize(), back); err != nil {
			t.Fatalf("protobuf decoding the codec's %T: %v", m, err)
		}
		out.Free()
		if !proto.Equal(m, back) {
			t.Errorf("%T: protobuf read back %v from the codec's encoding of %v", m, back, m)
		}

		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		wire = protowire.AppendTag(wire, 999, protowire.BytesType) // a field this client does not know
		wire = protowire.AppendBytes(wire, []byte("from a newer metaserver"))
		want := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(wire, want); err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New().Interface()
		codecDecode(t, c, wire, got)
		if !proto.Equal(want, got) {
			t.Errorf("%T: the codec decoded %v, protobuf %v", m, got, want)
		}
	}
}

// Decoding replaces the message as protobuf does: nothing of what it held
// before is merged into the answer.
func TestTheCodecReplacesTheMessageItDecodesInto(t *testing.T) {
	c := testCodec()
	wire, err := proto.Marshal(&kilnv1.SubmitResponse{Build: &kilnv1.Build{Id: 2, Project: "zlib"}})
	if err != nil {
		t.Fatal(err)
	}
	into := &kilnv1.SubmitResponse{Build: fullBuild(), Cached: true, RequestId: 9}
	codecDecode(t, c, wire, into)
	want := &kilnv1.SubmitResponse{Build: &kilnv1.Build{Id: 2, Project: "zlib"}}
	if !proto.Equal(into, want) {
		t.Fatalf("decoded into a used message: %v, want %v", into, want)
	}
}

// Messages without generated code (gRPC's health service) go through
// gRPC's own codec.
func TestTheCodecFallsBackForMessagesWithoutGeneratedCode(t *testing.T) {
	c := testCodec()
	if c.Name() != "proto" {
		t.Fatalf("codec name %q: the metaserver knows it as proto", c.Name())
	}
	m := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	if _, ok := any(m).(vtMessage); ok {
		t.Fatal("the health response has generated code; pick a message without it")
	}
	out, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := &healthpb.HealthCheckResponse{}
	codecDecode(t, c, out.Materialize(), got)
	if !proto.Equal(m, got) {
		t.Fatalf("round trip through the fallback: %v, want %v", got, m)
	}
}

// Hostile bytes from a metaserver: truncated messages, lengths past the
// end and bad wire types are errors, never a panic or a partial success.
func TestTheCodecRefusesMalformedMessages(t *testing.T) {
	c := testCodec()
	wire, err := proto.Marshal(&kilnv1.SubmitResponse{Build: fullBuild()})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"truncated":             wire[:len(wire)-3],
		"length past the end":   {0x0a, 0x7f, 0x08, 0x01},
		"wire type 7":           {0x0f},
		"varint of 11 bytes":    {0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"field number 0":        {0x00, 0x01},
		"negative length":       {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"group end with no end": {0x0c},
	}
	for name, b := range cases {
		if err := proto.Unmarshal(b, &kilnv1.SubmitResponse{}); err == nil {
			t.Fatalf("%s: protobuf accepts it; the case tests nothing", name)
		}
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &kilnv1.SubmitResponse{}); err == nil {
			t.Errorf("%s: the codec accepted %x", name, b)
		}
	}
}

// The generated decoder has no recursion limit (protobuf's is 10,000), so
// a message type that could hold itself would let a hostile metaserver
// nest it until the client's stack overflowed, which kills the process.
// No message of the two services the client calls can.
func TestNoMessageTheClientDecodesCanNestItself(t *testing.T) {
	var cycle func(m protoreflect.MessageDescriptor, path []protoreflect.FullName) []protoreflect.FullName
	cycle = func(m protoreflect.MessageDescriptor, path []protoreflect.FullName) []protoreflect.FullName {
		for _, p := range path {
			if p == m.FullName() {
				return append(path, m.FullName())
			}
		}
		path = append(path, m.FullName())
		fields := m.Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			inner := f.Message()
			if f.IsMap() {
				inner = f.MapValue().Message()
			}
			if inner != nil {
				if c := cycle(inner, path); c != nil {
					return c
				}
			}
		}
		return nil
	}
	if cycle((&structpb.Struct{}).ProtoReflect().Descriptor(), nil) == nil {
		t.Fatal("the walk misses google.protobuf.Struct's Struct -> Value -> Struct")
	}
	methods := 0
	for _, fd := range []protoreflect.FileDescriptor{kilnv1.File_kiln_v1_compile_proto, kilnv1.File_kiln_v1_status_proto} {
		for i := range fd.Services().Len() {
			ms := fd.Services().Get(i).Methods()
			for j := range ms.Len() {
				methods++
				for _, m := range []protoreflect.MessageDescriptor{ms.Get(j).Input(), ms.Get(j).Output()} {
					if c := cycle(m, nil); c != nil {
						t.Errorf("%s can nest itself: %v", m.FullName(), c)
					}
				}
			}
		}
	}
	if methods < 5 {
		t.Fatalf("found %d methods; the services were not read", methods)
	}
}

// FuzzCodecAgreesWithProtobuf decodes arbitrary bytes as a WatchBuildResponse
// with both decoders: whatever protobuf accepts the codec must accept and
// decode equal, and nothing may panic. The other way round the codec is
// looser: it reads some messages protobuf refuses (strings that are not
// UTF-8, malformed groups and map entries), which is one reason only the
// client uses it, never the metaserver, which reads strangers' requests.
func FuzzCodecAgreesWithProtobuf(f *testing.F) {
	for _, m := range codecMessages() {
		if w, ok := m.(*kilnv1.WatchBuildResponse); ok {
			b, _ := proto.Marshal(w)
			f.Add(b)
		}
	}
	b, _ := proto.Marshal(&kilnv1.WatchBuildResponse{Build: &kilnv1.Build{Project: "x"}})
	f.Add(b)
	f.Add([]byte{0x0a, 0x03, 0x12, 0x01, 0xff})
	f.Add([]byte{0x43, 0xc4, 0x30}) // a group ended by another field's end
	f.Add([]byte{0x12, 0x1, 0x30})  // a number sent as bytes
	f.Add([]byte{0xe8, 0x00, 0x30}) // an unknown field's tag in two bytes
	c := testCodec()
	f.Fuzz(func(t *testing.T, wire []byte) {
		want := &kilnv1.WatchBuildResponse{}
		perr := proto.Unmarshal(wire, want)
		got := &kilnv1.WatchBuildResponse{}
		verr := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got)
		switch {
		case perr == nil && verr != nil:
			t.Fatalf("protobuf decodes %x, the codec refuses it: %v", wire, verr)
		case perr == nil && !proto.Equal(want, got):
			// Unknown fields are kept as read by the codec and with
			// their tags re-encoded by protobuf: compare the rest.
			dropUnknown(want.ProtoReflect())
			dropUnknown(got.ProtoReflect())
			if !proto.Equal(want, got) {
				t.Fatalf("%x: the codec decoded %v, protobuf %v", wire, got, want)
			}
		}
	})
}

// dropUnknown removes the unknown fields of m and of every message in it.
func dropUnknown(m protoreflect.Message) {
	eachMessage(m, func(m protoreflect.Message) { m.SetUnknown(nil) })
}

// eachMessage calls fn with m and every message inside it.
func eachMessage(m protoreflect.Message, fn func(protoreflect.Message)) {
	fn(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					eachMessage(mv.Message(), fn)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					eachMessage(v.List().Get(i).Message(), fn)
				}
			}
		case fd.Message() != nil:
			eachMessage(v.Message(), fn)
		}
		return true
	})
}
