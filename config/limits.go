package config

import (
	"bytes"
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The limits below keep reading any file fast: a configuration is a few KiB of blocks,
// attributes and plain values, and the HCL parsers take time (and, for nesting, stack)
// in proportion to what they are given.
const (
	// maxFileSize is the largest configuration file read. The commented example is 7 KiB.
	maxFileSize = 32 << 10
	// maxNesting bounds brackets, braces, parentheses and templates nested in one another,
	// unary operators in a row, and conditional expressions in a file. HCL's parsers recurse
	// for each, and ten thousand levels take a gigabyte of stack, which Go does not survive.
	maxNesting = 32
)

// tooLarge is the error for a file over maxFileSize.
func tooLarge(filename string, size string) error {
	return fmt.Errorf("%s: file too large: %s, limit %s (a configuration is a few KiB; is this the right file?)",
		filename, size, formatSize(maxFileSize))
}

// formatSize renders a size in bytes, KiB or MiB.
func formatSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.4g KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.4g MiB", float64(n)/(1<<20))
	}
}

// checkNesting finds, before the file is parsed, the first place where it goes deeper than
// maxNesting. The HCL native syntax is read by HCL's own scanner, so that strings, comments
// and heredocs are told apart from code exactly as the parser will.
func checkNesting(filename string, src []byte, isJSON bool) *problem {
	if isJSON {
		return checkJSONNesting(filename, src)
	}
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	var open []hclsyntax.TokenType // closers of the constructs open at this point
	unary, conditionals := 0, 0
	for i := range tokens {
		tok := &tokens[i]
		switch tok.Type {
		case hclsyntax.TokenNewline, hclsyntax.TokenComment:
			continue // neither ends a run of unary operators
		case hclsyntax.TokenMinus, hclsyntax.TokenBang:
			if unary++; unary > maxNesting {
				return &problem{&tok.Range, fmt.Sprintf("more than %d operators in a row", maxNesting)}
			}
			continue
		case hclsyntax.TokenQuestion:
			if conditionals++; conditionals > maxNesting {
				return &problem{&tok.Range, fmt.Sprintf("more than %d conditional expressions", maxNesting)}
			}
		}
		unary = 0
		if closer, ok := hclClosers[tok.Type]; ok {
			if open = append(open, closer); len(open) > maxNesting {
				return &problem{&tok.Range, fmt.Sprintf("nested more than %d levels deep", maxNesting)}
			}
			continue
		}
		// A closer that does not match leaves everything open: the count stays an upper
		// bound of the parser's depth.
		if n := len(open); n > 0 && open[n-1] == tok.Type {
			open = open[:n-1]
		}
	}
	return nil
}

// hclClosers maps each token that opens a nested construct to the token that closes it.
var hclClosers = map[hclsyntax.TokenType]hclsyntax.TokenType{
	hclsyntax.TokenOBrace:          hclsyntax.TokenCBrace,
	hclsyntax.TokenOBrack:          hclsyntax.TokenCBrack,
	hclsyntax.TokenOParen:          hclsyntax.TokenCParen,
	hclsyntax.TokenOQuote:          hclsyntax.TokenCQuote,
	hclsyntax.TokenOHeredoc:        hclsyntax.TokenCHeredoc,
	hclsyntax.TokenTemplateInterp:  hclsyntax.TokenTemplateSeqEnd,
	hclsyntax.TokenTemplateControl: hclsyntax.TokenTemplateSeqEnd,
}

// checkJSONNesting is checkNesting for HCL's JSON syntax. Strings end as HCL's JSON
// scanner ends them: at an unescaped quote or at a control character.
func checkJSONNesting(filename string, src []byte) *problem {
	var open []byte
	pos := hcl.InitialPos
	advance := func(n int) {
		for _, c := range src[pos.Byte : pos.Byte+n] {
			if c == '\n' {
				pos.Line++
				pos.Column = 1
			} else if c < 0x80 || c >= 0xC0 { // count characters, not UTF-8 continuation bytes
				pos.Column++
			}
		}
		pos.Byte += n
	}
	for pos.Byte < len(src) {
		switch c := src[pos.Byte]; c {
		case '"':
			n, escaping := 1, false
			for ; pos.Byte+n < len(src); n++ {
				b := src[pos.Byte+n]
				if b < 0x20 {
					break
				}
				if b == '"' && !escaping {
					n++
					break
				}
				escaping = b == '\\' && !escaping
			}
			advance(n)
		case '{', '[':
			if open = append(open, c+2); len(open) > maxNesting { // '{'+2 is '}', '['+2 is ']'
				end := pos
				end.Byte++
				end.Column++
				return &problem{&hcl.Range{Filename: filename, Start: pos, End: end},
					fmt.Sprintf("nested more than %d levels deep", maxNesting)}
			}
			advance(1)
		case '}', ']':
			if n := len(open); n > 0 && open[n-1] == c {
				open = open[:n-1]
			}
			advance(1)
		default:
			advance(1)
		}
	}
	return nil
}

// notText reports a file that cannot be a configuration because it is not text: a NUL byte
// or bytes that are not UTF-8 (HCL's encoding). It names the first such byte's line, so a
// stray byte in an edited file can be found, and nil when src is text.
func notText(filename string, src []byte) error {
	bad := bytes.IndexByte(src, 0)
	if !utf8.Valid(src) {
		for i := 0; i < len(src); {
			r, n := utf8.DecodeRune(src[i:])
			if r == utf8.RuneError && n <= 1 {
				if bad < 0 || i < bad {
					bad = i
				}
				break
			}
			i += n
		}
	}
	if bad < 0 {
		return nil
	}
	line := bytes.Count(src[:bad], []byte("\n")) + 1
	return fmt.Errorf("%s:%d: not a text file: byte %d is %#02x, which a UTF-8 configuration cannot hold (is this the right file?)",
		filename, line, bad+1, src[bad])
}
