package compilecli

import (
	"flag"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/platform"
)

// flagCase is one options struct and its flag set.
type flagCase struct {
	name string
	opts any // pointer to the options struct
	fs   *flag.FlagSet
}

func flagCases() []flagCase {
	getenv := func(string) string { return "" }
	var (
		s  SubmitOptions
		c  CheckOptions
		st StatusOptions
		ca CancelOptions
		l  LogOptions
		v  VerifyOptions
	)
	return []flagCase{
		{"submit", &s, SubmitFlags(&s, getenv)},
		{"check", &c, CheckFlags(&c, getenv)},
		{"status", &st, StatusFlags(&st, getenv)},
		{"cancel", &ca, CancelFlags(&ca, getenv)},
		{"log", &l, LogFlags(&l, getenv)},
		{"verify", &v, VerifyFlags(&v, getenv)},
	}
}

// taggedFields maps each flag name in `flag` tags (embedded structs
// included) to the field's index path.
func taggedFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			for name, idx := range taggedFields(f.Type) {
				out[name] = append([]int{i}, idx...)
			}
			continue
		}
		if tag := f.Tag.Get("flag"); tag == "<platform.Registry flags>" {
			for _, pf := range platform.Registry {
				if pf.Flag != "" {
					out[pf.Flag] = []int{i}
				}
			}
		} else if tag != "" {
			for _, name := range strings.Split(tag, ",") {
				out[name] = []int{i}
			}
		} else if f.Tag.Get("arg") == "" {
			out["<untagged "+f.Name+">"] = []int{i}
		}
	}
	return out
}

// sample returns a value that flag accepts for a field of type typ.
func sample(typ reflect.Type, name string) string {
	switch typ.Kind() {
	case reflect.Bool:
		return "true"
	case reflect.Int64:
		if typ == reflect.TypeOf(time.Duration(0)) {
			return "42s"
		}
		return "42"
	}
	switch name {
	case "endian":
		return "big"
	case "data-model":
		return "ILP32"
	case "char":
		return "unsigned"
	case "align-long-long", "align-double", "align-pointer", "sizeof-long-double", "sizeof-size-t", "sizeof-wchar-t":
		return "8"
	case "page-size":
		return "4096"
	case "o", "platform":
		return "arch=s390x"
	case "mail":
		return "none"
	}
	return "x1"
}

func TestEveryFlagSetsItsTaggedFieldAndEveryTaggedFieldHasAFlag(t *testing.T) {
	for _, c := range flagCases() {
		t.Run(c.name, func(t *testing.T) {
			v := reflect.ValueOf(c.opts).Elem()
			fields := taggedFields(v.Type())
			var flags []string
			c.fs.VisitAll(func(fl *flag.Flag) { flags = append(flags, fl.Name) })
			var tagged []string
			for name := range fields {
				tagged = append(tagged, name)
			}
			sort.Strings(flags)
			sort.Strings(tagged)
			if strings.Join(flags, " ") != strings.Join(tagged, " ") {
				t.Fatalf("flags %v\ntagged fields %v", flags, tagged)
			}
			for _, name := range flags {
				field := v.FieldByIndex(fields[name])
				if field.Kind() == reflect.Bool {
					field.SetBool(false) // a short name may share its field
				}
				before := reflect.ValueOf(field.Interface())
				copyBefore := reflect.New(field.Type()).Elem()
				copyBefore.Set(before)
				if before.Kind() == reflect.Map && !before.IsNil() {
					copyBefore = reflect.MakeMap(field.Type())
					for _, k := range before.MapKeys() {
						copyBefore.SetMapIndex(k, before.MapIndex(k))
					}
				}
				if err := c.fs.Set(name, sample(field.Type(), name)); err != nil {
					t.Fatalf("--%s: %v", name, err)
				}
				if reflect.DeepEqual(copyBefore.Interface(), field.Interface()) {
					t.Errorf("--%s did not change its field %v", name, field.Interface())
				}
			}
		})
	}
}

func TestValidateImpliesWaitForDownload(t *testing.T) {
	o := SubmitOptions{Connection: Connection{Metaserver: "127.0.0.1:1", DialTimeout: time.Second}, Project: "p", Email: email, Download: "d"}
	if err := o.Validate(); err != nil || !o.Wait {
		t.Fatalf("Validate = %v, Wait = %v", err, o.Wait)
	}
	s := StatusOptions{Connection: o.Connection, BuildID: 1, Download: "d"}
	if err := s.Validate(); err != nil || !s.Wait {
		t.Fatalf("status Validate = %v, Wait = %v", err, s.Wait)
	}
}

func TestValidateRefusesAnEmptyMetaserver(t *testing.T) {
	o := SubmitOptions{Connection: Connection{Metaserver: " ", DialTimeout: time.Second}, Project: "p", Email: email}
	if err := o.Validate(); ExitCode(err) != ExitInvalid {
		t.Fatalf("Validate = %v", err)
	}
}
