package shard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The JSON of the JSONL reader: a small scanner for flat objects (the
// standard decoder would allocate a map or a struct per line and refuse the
// NaN and Infinity tokens that must be reported as non-finite values), and
// the parsers of the field values it hands back.

// isPresent reports a field given with a value: JSON null means absent.
func isPresent(v []byte) bool { return v != nil && string(v) != "null" }

// clip shortens a value quoted in an error message, so that a huge token
// does not make a huge message.
func clip(v []byte) string {
	if len(v) > 40 {
		return string(v[:37]) + "..."
	}
	return string(v)
}

// ---------------------------------------------------------------------------
// A small JSON scanner for flat objects. It accepts the non-standard number
// tokens NaN, Infinity and -Infinity, and skips nested values of fields it
// does not use.

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// parseObject calls fn for every key of the object in b with the raw bytes of
// its value.
func parseObject(b []byte, fn func(key string, val []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errors.New("expected '{'")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) || b[i] != '"' {
				return fmt.Errorf("expected a key at byte %d", i)
			}
			end, err := skipString(b, i)
			if err != nil {
				return err
			}
			key, ok := jsonString(b[i:end])
			if !ok {
				return fmt.Errorf("bad key at byte %d", i)
			}
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return fmt.Errorf("expected ':' at byte %d", i)
			}
			i = skipWS(b, i+1)
			vend, err := skipValue(b, i)
			if err != nil {
				return fmt.Errorf("field %q: %v", key, err)
			}
			if err := fn(key, b[i:vend]); err != nil {
				return err
			}
			i = skipWS(b, vend)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			return fmt.Errorf("expected ',' or '}' at byte %d", i)
		}
	}
	if i = skipWS(b, i); i != len(b) {
		return fmt.Errorf("trailing data at byte %d", i)
	}
	return nil
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing value")
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errors.New("unterminated array or object")
	}
	j := i
	for j < len(b) && !isDelim(b[j]) {
		j++
	}
	tok := string(b[i:j])
	switch tok {
	case "":
		return 0, fmt.Errorf("unexpected %q", b[i])
	case "true", "false", "null", "NaN", "Infinity", "-Infinity":
		return j, nil
	}
	if _, err := strconv.ParseFloat(tok, 64); err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("invalid token %q", clip(b[i:j]))
	}
	return j, nil
}

func isDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n', ':', '"', '{', '[':
		return true
	}
	return false
}

// jsonString decodes a JSON string literal.
func jsonString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// parseID accepts a string or an integer literal (kept as written).
func parseID(v []byte) (string, error) {
	if v[0] == '"' {
		s, ok := jsonString(v)
		if !ok {
			return "", fmt.Errorf("invalid string %s", clip(v))
		}
		return s, nil
	}
	s := string(v)
	t := strings.TrimPrefix(s, "-")
	if t == "" || strings.Trim(t, "0123456789") != "" {
		return "", fmt.Errorf("expected a string or an integer, got %s", clip(v))
	}
	return s, nil
}

// parseNumber parses a number token (NaN and ±Infinity included); booleans
// are accepted as 0/1 when flag is set.
func parseNumber(v []byte, flag bool) (float64, error) {
	switch string(v) {
	case "true":
		if flag {
			return 1, nil
		}
	case "false":
		if flag {
			return 0, nil
		}
	case "NaN":
		return math.NaN(), nil
	case "Infinity":
		return math.Inf(1), nil
	case "-Infinity":
		return math.Inf(-1), nil
	}
	if len(v) == 0 || v[0] == '"' || v[0] == '[' || v[0] == '{' || v[0] == 't' || v[0] == 'f' {
		return 0, errors.New("not a number")
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, err
	}
	return f, nil
}

// parseFloatArray appends the numbers of the JSON array v to dst as float32
// (correctly rounded) and returns the element count. With limit >= 0 at most
// limit values are appended; the rest are only counted.
func parseFloatArray(v []byte, dst []float32, limit int) ([]float32, int, error) {
	if len(v) == 0 || v[0] != '[' {
		return dst, 0, fmt.Errorf("expected an array, got %s", clip(v))
	}
	i := skipWS(v, 1)
	if i < len(v) && v[i] == ']' {
		return dst, 0, nil
	}
	n := 0
	for {
		j := i
		for j < len(v) && !isDelim(v[j]) {
			j++
		}
		tok := v[i:j]
		var f float32
		switch string(tok) {
		case "NaN":
			f = float32(math.NaN())
		case "Infinity":
			f = float32(math.Inf(1))
		case "-Infinity":
			f = float32(math.Inf(-1))
		case "":
			return dst, 0, fmt.Errorf("element %d: expected a number", n)
		case "null":
			return dst, 0, fmt.Errorf("element %d is null", n)
		default:
			g, err := strconv.ParseFloat(string(tok), 32)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return dst, 0, fmt.Errorf("element %d: invalid number %q", n, clip(tok))
			}
			f = float32(g)
		}
		if limit < 0 || n < limit {
			dst = append(dst, f)
		}
		n++
		i = skipWS(v, j)
		if i < len(v) && v[i] == ',' {
			i = skipWS(v, i+1)
			continue
		}
		if i < len(v) && v[i] == ']' {
			break
		}
		return dst, 0, fmt.Errorf("element %d: expected ',' or ']'", n-1)
	}
	return dst, n, nil
}
