package config

import (
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// How an attribute's expression becomes a Go value: only plain values are taken (no
// variables, functions or templates), converted to the setting's type, with a message that
// names the setting and shows the bad value.

func (s section) errorf(attr *hcl.Attribute, format string, args ...any) {
	s.d.problems.add(attr.Expr.Range().Ptr(), "%s.%s: %s", s.path, attr.Name, fmt.Sprintf(format, args...))
}

// value evaluates the attribute and converts it to ty. It returns false when the attribute
// is absent, null, or wrong (the problem is then recorded). A value that is set is also
// recorded in Config.ranges.
func (s section) value(attr *hcl.Attribute, ty cty.Type, want string) (cty.Value, bool) {
	if attr == nil {
		return cty.NilVal, false
	}
	if !plain(attr.Expr) {
		s.errorf(attr, "must be a plain value (a string, number, bool, list or map), not an expression")
		return cty.NilVal, false
	}
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		s.d.problems.addDiags(diags, s.path+"."+attr.Name)
		return cty.NilVal, false
	}
	if v.IsNull() {
		return cty.NilVal, false
	}
	if outOfRange(v) {
		s.errorf(attr, "a number here is too large or too small: numbers must be written with exponents between %d and %d",
			-maxExponent, maxExponent)
		return cty.NilVal, false
	}
	cv, err := convertValue(v, ty)
	if err != nil || !cv.IsWhollyKnown() {
		s.errorf(attr, "must be %s (got %s)", want, showValue(v))
		return cty.NilVal, false
	}
	if cv.IsNull() {
		return cty.NilVal, false
	}
	s.d.cfg.ranges[s.key+"."+attr.Name] = attr.Expr.Range()
	return cv, true
}

// convertValue is convert.Convert, element by element for a list or map of primitives:
// cty's conversion of a tuple to a list compares the types of every pair of elements,
// which takes half a second for 8000 strings.
func convertValue(v cty.Value, ty cty.Type) (cty.Value, error) {
	vt := v.Type()
	collection := vt.IsTupleType() || vt.IsListType() || vt.IsSetType()
	if ty.IsMapType() {
		collection = vt.IsObjectType() || vt.IsMapType()
	}
	if !(ty.IsListType() || ty.IsMapType()) || !ty.ElementType().IsPrimitiveType() || !collection {
		return convert.Convert(v, ty)
	}
	if v.LengthInt() == 0 {
		if ty.IsListType() {
			return cty.ListValEmpty(ty.ElementType()), nil
		}
		return cty.MapValEmpty(ty.ElementType()), nil
	}
	var list []cty.Value
	elems := make(map[string]cty.Value)
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		ce, err := convert.Convert(e, ty.ElementType())
		if err != nil {
			return cty.NilVal, err
		}
		if ty.IsListType() {
			list = append(list, ce)
		} else {
			elems[k.AsString()] = ce
		}
	}
	if ty.IsListType() {
		return cty.ListVal(list), nil
	}
	return cty.MapVal(elems), nil
}

// plain reports whether expr is a value written out: a string without interpolation, a
// number, a bool, null, a variable (for HCL to reject), or a list or map of those. Anything
// else is refused before it is evaluated: a configuration needs no arithmetic, and a few
// nested for expressions evaluate billions of elements. Expressions of HCL's JSON syntax
// are values already.
func plain(expr hcl.Expression) bool {
	switch e := expr.(type) {
	case *hclsyntax.LiteralValueExpr, *hclsyntax.ScopeTraversalExpr:
		return true
	case *hclsyntax.TemplateExpr:
		return plainString(e)
	case *hclsyntax.UnaryOpExpr: // a negative number
		lit, ok := e.Val.(*hclsyntax.LiteralValueExpr)
		return ok && e.Op == hclsyntax.OpNegate && lit.Val.Type() == cty.Number
	case *hclsyntax.TupleConsExpr:
		for _, elem := range e.Exprs {
			if !plain(elem) {
				return false
			}
		}
		return true
	case *hclsyntax.ObjectConsExpr:
		for _, item := range e.Items {
			key, ok := item.KeyExpr.(*hclsyntax.ObjectConsKeyExpr)
			if !ok || key.ForceNonLiteral || !plain(item.ValueExpr) {
				return false
			}
			switch k := key.Wrapped.(type) {
			case *hclsyntax.ScopeTraversalExpr: // a bare name
				if len(k.Traversal) != 1 {
					return false
				}
			case *hclsyntax.TemplateExpr:
				if !plainString(k) {
					return false
				}
			default:
				return false
			}
		}
		return true
	case hclsyntax.Expression:
		return false
	default:
		return true
	}
}

// plainString reports whether a template is a string with no interpolation or directive.
func plainString(t *hclsyntax.TemplateExpr) bool {
	for _, part := range t.Parts {
		lit, ok := part.(*hclsyntax.LiteralValueExpr)
		if !ok || lit.Val.Type() != cty.String {
			return false
		}
	}
	return true
}

// maxExponent bounds the decimal exponent of numbers. Printing a number, or converting it
// to a string, takes time in proportion to its digits: 1e9999999 takes 20 seconds.
const maxExponent = 1000

// outOfRange reports whether v holds a number beyond maxExponent either way.
func outOfRange(v cty.Value) bool {
	if !v.IsKnown() || v.IsNull() {
		return false
	}
	ty := v.Type()
	switch {
	case ty == cty.Number:
		bf := v.AsBigFloat()
		if bf.IsInf() {
			return true
		}
		// bf = mant × 2^exp with 0.5 ≤ |mant| < 1; 3322 bits are about 1000 decimal digits.
		exp := bf.MantExp(nil)
		return bf.Sign() != 0 && (exp > 3322 || exp < -3322)
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType() || ty.IsMapType() || ty.IsObjectType():
		for it := v.ElementIterator(); it.Next(); {
			if _, e := it.Element(); outOfRange(e) {
				return true
			}
		}
	}
	return false
}

// showValue renders a value for an error message.
func showValue(v cty.Value) string {
	switch {
	case v.IsNull():
		return "null"
	case v.Type() == cty.String:
		return strconv.Quote(v.AsString())
	case v.Type() == cty.Number:
		return v.AsBigFloat().Text('g', -1)
	case v.Type() == cty.Bool:
		return strconv.FormatBool(v.True())
	default:
		return v.Type().FriendlyName()
	}
}

// The converters below store a value in dst when the attribute is set and right. Each
// reports whether it stored one.

func (s section) str(attr *hcl.Attribute, dst *string) bool {
	v, ok := s.value(attr, cty.String, "a string")
	if ok {
		*dst = v.AsString()
	}
	return ok
}

func (s section) boolean(attr *hcl.Attribute, dst *bool) bool {
	v, ok := s.value(attr, cty.Bool, "true or false")
	if ok {
		*dst = v.True()
	}
	return ok
}

func (s section) integer(attr *hcl.Attribute, dst *int) bool {
	v, ok := s.value(attr, cty.Number, "a whole number")
	if !ok {
		return false
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact || i > 1<<31 || i < -(1<<31) {
		s.errorf(attr, "must be a whole number (got %s)", showValue(v))
		delete(s.d.cfg.ranges, s.key+"."+attr.Name)
		return false
	}
	*dst = int(i)
	return true
}

func (s section) duration(attr *hcl.Attribute, dst *time.Duration) bool {
	v, ok := s.value(attr, cty.String, `a duration such as "500ms" or "30s"`)
	if !ok {
		return false
	}
	dur, err := time.ParseDuration(v.AsString())
	if err != nil {
		s.errorf(attr, `must be a duration such as "500ms" or "30s" (got %q)`, v.AsString())
		delete(s.d.cfg.ranges, s.key+"."+attr.Name)
		return false
	}
	*dst = dur
	return true
}

func (s section) strList(attr *hcl.Attribute, dst *[]string) bool {
	v, ok := s.value(attr, cty.List(cty.String), "a list of strings")
	if !ok {
		return false
	}
	out := make([]string, 0, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			out = append(out, "")
			continue
		}
		out = append(out, e.AsString())
	}
	*dst = out
	return true
}

func (s section) strMap(attr *hcl.Attribute, dst *map[string]string) bool {
	v, ok := s.value(attr, cty.Map(cty.String), "a map of strings")
	if !ok {
		return false
	}
	out := make(map[string]string, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if e.IsNull() {
			out[k.AsString()] = ""
			continue
		}
		out[k.AsString()] = e.AsString()
	}
	*dst = out
	return true
}
