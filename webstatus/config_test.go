package main

import (
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEveryFlagMapsToAConfigField checks the flag <-> Config mapping both
// ways: each field names a defined flag in its tag, each flag is named by
// a field, and setting the flag changes exactly that field.
func TestEveryFlagMapsToAConfigField(t *testing.T) {
	var c Config
	fs := newFlagSet(&c)
	typ := reflect.TypeOf(c)
	byFlag := map[string]string{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("flag")
		if name == "" {
			t.Errorf("field %s has no flag tag", f.Name)
			continue
		}
		if fs.Lookup(name) == nil {
			t.Errorf("field %s names flag --%s, which is not defined", f.Name, name)
		}
		byFlag[name] = f.Name
	}
	samples := map[reflect.Kind]string{reflect.String: "sample:1", reflect.Int64: "7s", reflect.Uint: "7", reflect.Bool: "true"}
	fs.VisitAll(func(fl *flag.Flag) {
		field, ok := byFlag[fl.Name]
		if !ok {
			t.Errorf("flag --%s sets no Config field", fl.Name)
			return
		}
		if fl.Usage == "" {
			t.Errorf("flag --%s has no help text", fl.Name)
		}
		var c2 Config
		fs2 := newFlagSet(&c2)
		v := reflect.ValueOf(&c2).Elem().FieldByName(field)
		sample, ok := samples[v.Kind()]
		if !ok {
			t.Fatalf("no sample value for kind %s", v.Kind())
		}
		if err := fs2.Parse([]string{"--" + fl.Name + "=" + sample}); err != nil {
			t.Fatalf("--%s=%s: %v", fl.Name, sample, err)
		}
		changed := 0
		for i := range typ.NumField() {
			if !reflect.ValueOf(c2).Field(i).IsZero() {
				changed++
				if typ.Field(i).Name != field {
					t.Errorf("--%s changed field %s, want %s", fl.Name, typ.Field(i).Name, field)
				}
			}
		}
		if changed != 1 {
			t.Errorf("--%s changed %d fields, want 1", fl.Name, changed)
		}
	})
}

func TestParseConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(Config) bool
		wantErr bool
	}{
		{"defaults are loopback and valid", nil, nil, func(c Config) bool {
			return c.Listen == "127.0.0.1:8080" && strings.HasPrefix(c.Metaserver, "127.0.0.1:") && c.RPCTimeout == 10*time.Second
		}, false},
		{"the environment fills a flag not given", nil, map[string]string{"KILN_METASERVER": "127.0.0.1:9999", "KILN_WEBSTATUS_LISTEN": "127.0.0.1:1234"},
			func(c Config) bool { return c.Metaserver == "127.0.0.1:9999" && c.Listen == "127.0.0.1:1234" }, false},
		{"a flag beats the environment", []string{"--metaserver", "127.0.0.1:1"}, map[string]string{"KILN_METASERVER": "127.0.0.1:9999"},
			func(c Config) bool { return c.Metaserver == "127.0.0.1:1" }, false},
		{"an address without port is refused", []string{"--metaserver", "localhost"}, nil, nil, true},
		{"several metaservers separated by commas are taken", []string{"--metaserver", "127.0.0.1:1,127.0.0.1:2"}, nil,
			func(c Config) bool { return c.Metaserver == "127.0.0.1:1,127.0.0.1:2" }, false},
		{"a list with one bad address is refused", []string{"--metaserver", "127.0.0.1:1,localhost"}, nil, nil, true},
		{"a list reaching off loopback in plaintext is refused", []string{"--metaserver", "127.0.0.1:1,10.0.0.5:2"}, nil, nil, true},
		{"a zero rpc timeout is refused", []string{"--rpc-timeout", "0s"}, nil, nil, true},
		{"a page size over 500 is refused", []string{"--page-size", "501"}, nil, nil, true},
		{"an unknown log level is refused", nil, map[string]string{"KILN_LOG_LEVEL": "loud"}, nil, true},
		{"stray arguments are refused", []string{"extra"}, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, env(tt.env))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error for %v", tt.args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
	if _, err := parseConfig([]string{"--listen", "nope"}, env(nil)); !errors.Is(err, ErrConfig) {
		t.Errorf("validation error %v does not wrap ErrConfig", err)
	}
}
