package manifest

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// options reads the options mapping: name -> {type, default, choices,
// description}.
func (p *parser) options(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "options:" with nothing under it
	}
	err := mapping(n, "options", func(name string, k, v *yaml.Node) error {
		if !optionNameRE.MatchString(name) {
			return errAt(k, "option name %q is invalid: use a lower-case letter, then up to 31 lower-case letters, digits or '_'", name)
		}
		if len(p.m.Options) == MaxOptions {
			return errAt(k, "options: more than %d options", MaxOptions)
		}
		o, err := option(name, v)
		if err != nil {
			return err
		}
		p.m.Options = append(p.m.Options, o)
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(p.m.Options, func(a, b Option) int { return strings.Compare(a.Name, b.Name) })
	return nil
}

// option reads one option declaration.
func option(name string, n *yaml.Node) (Option, error) {
	o := Option{Name: name}
	what := fmt.Sprintf("option %q", name)
	var typeNode, defaultNode, choicesNode *yaml.Node
	err := mapping(n, what, func(key string, k, v *yaml.Node) error {
		switch key {
		case "type":
			typeNode = v
		case "default":
			defaultNode = v
		case "choices":
			choicesNode = v
		case "description":
			s, _, err := scalar(v, what+" description")
			if err != nil {
				return err
			}
			if len(s) > MaxDescriptionLen {
				return errAt(v, "%s: description longer than %d bytes", what, MaxDescriptionLen)
			}
			if !isPrintable(s) {
				return errAt(v, "%s: description contains control characters other than newlines", what)
			}
			o.Description = s
		default:
			return errAt(k, "%s: unknown key %q (known: type, default, choices, description)", what, key)
		}
		return nil
	})
	if err != nil {
		return o, err
	}
	if typeNode == nil {
		return o, errAt(n, "%s: type is missing (one of string, bool, int, choice)", what)
	}
	t, _, err := scalar(typeNode, what+" type")
	if err != nil {
		return o, err
	}
	o.Type = OptionType(t)
	switch o.Type {
	case OptionString, OptionBool, OptionInt:
		if choicesNode != nil {
			return o, errAt(choicesNode, "%s: choices are only for type choice, not %s", what, o.Type)
		}
	case OptionChoice:
		if choicesNode == nil {
			return o, errAt(n, "%s: type choice needs a list of choices", what)
		}
		if o.Choices, err = choices(choicesNode, what); err != nil {
			return o, err
		}
	default:
		return o, errAt(typeNode, "%s: unknown type %q (one of string, bool, int, choice)", what, t)
	}
	o.Default = zeroValue(o)
	if defaultNode != nil {
		s, ok, err := scalar(defaultNode, what+" default")
		if err != nil {
			return o, err
		}
		if !ok {
			return o, errAt(defaultNode, "%s: default is empty (leave it out for the type's default)", what)
		}
		canon, err := o.Canonical(s)
		if err != nil {
			return o, errAt(defaultNode, "%s: default %q is invalid: %s", what, s, err)
		}
		o.Default = canon
	}
	return o, nil
}

// zeroValue is an option's default when the manifest gives none.
func zeroValue(o Option) string {
	switch o.Type {
	case OptionBool:
		return "false"
	case OptionInt:
		return "0"
	case OptionChoice:
		return o.Choices[0]
	}
	return ""
}

func choices(n *yaml.Node, what string) ([]string, error) {
	items, ss, err := list(n, what+" choices")
	if err != nil {
		return nil, err
	}
	if len(ss) == 0 {
		return nil, errAt(n, "%s: choices must not be empty", what)
	}
	for i, s := range ss {
		if len(s) > MaxOptionValueLen {
			return nil, errAt(items[i], "%s: choice longer than %d bytes", what, MaxOptionValueLen)
		}
		if err := checkText(s); err != nil {
			return nil, errAt(items[i], "%s: choice %q %s", what, s, err)
		}
		if slices.Contains(ss[:i], s) {
			return nil, errAt(items[i], "%s: choice %q is listed twice", what, s)
		}
	}
	return ss, nil
}

// isPrintable accepts text whose only control characters are newlines
// and tabs.
func isPrintable(s string) bool {
	return checkText(strings.NewReplacer("\n", "", "\t", "").Replace(s)) == nil
}
