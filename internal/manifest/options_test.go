package manifest

import (
	"errors"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"
)

func fullManifest(t testing.TB) *Manifest {
	t.Helper()
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNormalize(t *testing.T) {
	m := fullManifest(t)
	defaults := map[string]string{"level": "2", "flavor": "plain", "debug": "false", "name": "x"}
	with := func(k, v string) map[string]string {
		out := maps.Clone(defaults)
		out[k] = v
		return out
	}
	tests := []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{"no options give every default", nil, defaults},
		{"an empty map gives every default", map[string]string{}, defaults},
		{"a default spelled out changes nothing", map[string]string{"level": "2", "flavor": "plain"}, defaults},
		{"an int loses its leading zeros", map[string]string{"level": "007"}, with("level", "7")},
		{"an int loses its plus sign", map[string]string{"level": "+3"}, with("level", "3")},
		{"a negative int stays negative", map[string]string{"level": "-1"}, with("level", "-1")},
		{"minus zero is zero", map[string]string{"level": "-0"}, with("level", "0")},
		{"yes is true", map[string]string{"debug": "yes"}, with("debug", "true")},
		{"ON is true", map[string]string{"debug": "ON"}, with("debug", "true")},
		{"1 is true", map[string]string{"debug": "1"}, with("debug", "true")},
		{"off is false", map[string]string{"debug": "off"}, with("debug", "false")},
		{"a choice among the choices is kept", map[string]string{"flavor": "fancy"}, with("flavor", "fancy")},
		{"a string is kept as given", map[string]string{"name": "Hello, World"}, with("name", "Hello, World")},
		{"an empty string is a value", map[string]string{"name": ""}, with("name", "")},
		{"a string of the maximal length is kept", map[string]string{"name": strings.Repeat("é", MaxOptionValueLen/2)}, with("name", strings.Repeat("é", MaxOptionValueLen/2))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before map[string]string
			if tt.in != nil {
				before = maps.Clone(tt.in)
			}
			got, err := m.Normalize(tt.in)
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("Normalize(%v) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if tt.in != nil && !maps.Equal(tt.in, before) {
				t.Errorf("Normalize modified its input: %v", tt.in)
			}
		})
	}
}

func TestNormalizeRefuses(t *testing.T) {
	m := fullManifest(t)
	many := map[string]string{}
	for i := range MaxOptions + 1 {
		many["o"+strconv.Itoa(i)] = "1"
	}
	tests := []struct {
		name      string
		m         *Manifest
		in        map[string]string
		option    string
		reasonHas string
	}{
		{"an unknown option", m, map[string]string{"levle": "2"}, "levle", "declared: debug, flavor, level, name"},
		{"any option of the default recipe", Default(), map[string]string{"level": "2"}, "level", "no kiln.yaml"},
		{"an int that is a word", m, map[string]string{"level": "high"}, "level", "not a decimal integer"},
		{"an int in hexadecimal", m, map[string]string{"level": "0x10"}, "level", "not a decimal integer"},
		{"an int with spaces", m, map[string]string{"level": " 2"}, "level", "not a decimal integer"},
		{"an int beyond 64 bits", m, map[string]string{"level": "99999999999999999999"}, "level", "64-bit range"},
		{"an empty int", m, map[string]string{"level": ""}, "level", "not a decimal integer"},
		{"a bool that is a word", m, map[string]string{"debug": "maybe"}, "debug", "not a boolean"},
		{"a choice not among the choices", m, map[string]string{"flavor": "Fancy"}, "flavor", `not one of "plain", "fancy"`},
		{"a string with a newline", m, map[string]string{"name": "a\nb"}, "name", "control character"},
		{"a string that is not UTF-8", m, map[string]string{"name": "\xff"}, "name", "UTF-8"},
		{"a value over the length limit", m, map[string]string{"name": strings.Repeat("x", MaxOptionValueLen+1)}, "name", "longer than 256"},
		{"a name over the length limit", m, map[string]string{strings.Repeat("n", MaxOptionNameLen+1): "1"}, strings.Repeat("n", MaxOptionNameLen+1), "longer than 32"},
		{"too many options", m, many, "", "at most 64"},
		{"the first bad option by name", m, map[string]string{"zzz": "1", "debug": "maybe"}, "debug", "not a boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.m.Normalize(tt.in)
			var oe *OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("Normalize(%v) = %v, %v; want an *OptionError", tt.in, got, err)
			}
			if oe.Option != tt.option || !strings.Contains(oe.Reason, tt.reasonHas) {
				t.Errorf("OptionError = %+v; want option %q and a reason containing %q", oe, tt.option, tt.reasonHas)
			}
			if got != nil {
				t.Errorf("Normalize returned a map with an error: %v", got)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error message is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestNormalizeOfTheDefaultRecipeWithoutOptionsIsEmpty(t *testing.T) {
	got, err := Default().Normalize(nil)
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("Default().Normalize(nil) = %v, %v; want an empty map", got, err)
	}
}

func TestNormalizeIsIdempotentAndOrderFree(t *testing.T) {
	m := fullManifest(t)
	a, err := m.Normalize(map[string]string{"debug": "YES", "level": "0010"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Normalize(map[string]string{"level": "10", "debug": "true", "flavor": "plain", "name": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(a, b) {
		t.Errorf("equivalent requests normalize differently: %v vs %v", a, b)
	}
	again, err := m.Normalize(a)
	if err != nil || !maps.Equal(again, a) {
		t.Errorf("Normalize(Normalize(x)) = %v, %v; want %v", again, err, a)
	}
}

func TestOptionErrorMessages(t *testing.T) {
	tests := []struct {
		err  *OptionError
		want string
	}{
		{&OptionError{Option: "level", Value: "high", Reason: "not a decimal integer"}, `option "level" = "high": not a decimal integer`},
		{&OptionError{Option: "level", Reason: "unknown option"}, `option "level": unknown option`},
		{&OptionError{Reason: "65 options given, at most 64 allowed"}, `options: 65 options given, at most 64 allowed`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}
