package state

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/causalrm/causalrm/internal/telemetry"
)

// causeCases are cause texts with their parsed values: every shape the
// leader writes, plus members holding the separators.
var causeCases = []struct {
	text  string
	cause Cause
}{
	{"", nil},
	{"start", Cause{{Kind: ChangeStart}}},
	{"restart", Cause{{Kind: ChangeRestart}}},
	{"join:w2", Cause{{Kind: ChangeJoin, Member: "w2"}}},
	{"leave:w3", Cause{{Kind: ChangeLeave, Member: "w3"}}},
	{"crash:w1", Cause{{Kind: ChangeCrash, Member: "w1"}}},
	{"join:w2,join:w3", Cause{{ChangeJoin, "w2"}, {ChangeJoin, "w3"}}},
	{"join:w2,leave:w3", Cause{{ChangeJoin, "w2"}, {ChangeLeave, "w3"}}},
	{"crash:w1,leave:w2", Cause{{ChangeCrash, "w1"}, {ChangeLeave, "w2"}}},
	{"crash:w1,unready:w4", Cause{{ChangeCrash, "w1"}, {ChangeUnready, "w4"}}},
	{"restart,crash:w1", Cause{{Kind: ChangeRestart}, {ChangeCrash, "w1"}}},
	{"restart,crash:w1,crash:w2,leave:w3,unready:w4",
		Cause{{Kind: ChangeRestart}, {ChangeCrash, "w1"}, {ChangeCrash, "w2"}, {ChangeLeave, "w3"}, {ChangeUnready, "w4"}}},
	{"crash:host:1234", Cause{{ChangeCrash, "host:1234"}}},                                           // a colon in a member
	{"crash:a,b,leave:c", Cause{{ChangeCrash, "a,b"}, {ChangeLeave, "c"}}},                           // a comma in a member
	{"join:a,,b,", Cause{{ChangeJoin, "a,,b,"}}},                                                     // commas, empty pieces
	{"unready:x,start", Cause{{ChangeUnready, "x"}, {Kind: ChangeStart}}},                            // parses; the leader never writes it
	{"join:pod-7f9c<&>", Cause{{ChangeJoin, "pod-7f9c<&>"}}},                                         // JSON escapes these
	{"leave:\u00e9\u00e8,crash:\"q\"", Cause{{ChangeLeave, "\u00e9\u00e8"}, {ChangeCrash, "\"q\""}}}, // and these
}

func TestCauseParseString(t *testing.T) {
	for _, tc := range causeCases {
		got, err := ParseCause(tc.text)
		if err != nil {
			t.Errorf("ParseCause(%q): %v", tc.text, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.cause) {
			t.Errorf("ParseCause(%q) = %#v, want %#v", tc.text, got, tc.cause)
		}
		if s := tc.cause.String(); s != tc.text {
			t.Errorf("%#v.String() = %q, want %q", tc.cause, s, tc.text)
		}
		if b, _ := tc.cause.MarshalText(); string(b) != tc.text {
			t.Errorf("%#v.MarshalText() = %q, want %q", tc.cause, b, tc.text)
		}
	}
}

func TestCauseParseErrors(t *testing.T) {
	for _, text := range []string{
		"bogus",         // unknown kind
		"bogus:w1",      // unknown kind with a member
		"Start",         // kinds are lower case
		"crash",         // missing member
		"crash:",        // empty member
		"join:",         // empty member
		"start:w1",      // start names no member
		"restart:w1",    // nor does restart
		",start",        // nothing before the comma
		"start,",        // nothing after it, and start has no member to continue
		"restart,bogus", // unknown kind after restart
		"restart,crash", // missing member after restart
		" start",        // no trimming
	} {
		c, err := ParseCause(text)
		if err == nil {
			t.Errorf("ParseCause(%q) = %#v, want an error", text, c)
		} else if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseCause(%q): %v does not wrap ErrInvalidArgument", text, err)
		}
		var u Cause
		if err := json.Unmarshal([]byte(`"`+text+`"`), &u); err == nil {
			t.Errorf("json cause %q decoded to %#v", text, u)
		}
	}
}

// legacyGeneration is Generation as it was when Cause was a string.
type legacyGeneration struct {
	Number  uint64   `json:"number"`
	Members []Member `json:"members"`
	Owner   []int    `json:"owner"`
	Cause   string   `json:"cause"`
	Time    int64    `json:"time"`
}

// TestCauseJSONCompatible: the JSON of a Generation (as in snapshots and
// log entries) is byte for byte what it was with the string cause, and
// that JSON decodes back to the typed cause.
func TestCauseJSONCompatible(t *testing.T) {
	ms := []Member{{"w1", "127.0.0.1:1"}, {"w2", "127.0.0.1:2"}}
	for _, tc := range causeCases {
		g := Generation{Number: 3, Members: ms, Owner: []int{0, 1, 0, 1}, Cause: tc.cause, Time: 12345}
		old := legacyGeneration{Number: 3, Members: ms, Owner: []int{0, 1, 0, 1}, Cause: tc.text, Time: 12345}
		got, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(old)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("cause %q:\n got %s\nwant %s", tc.text, got, want)
		}
		var back Generation
		if err := json.Unmarshal(want, &back); err != nil {
			t.Errorf("decode %s: %v", want, err)
		} else if !back.Cause.Equal(tc.cause) {
			t.Errorf("decode %s: cause %#v, want %#v", want, back.Cause, tc.cause)
		}
	}
	// A command's encoding (the raft log entry) too.
	c := Command{Op: OpSetGeneration, Time: 9, Generation: &Generation{Number: 2, Members: ms[:1], Owner: []int{0},
		Cause: Cause{{Kind: ChangeRestart}, {ChangeCrash, "w2"}}}}
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.Generation.Cause.String() != "restart,crash:w2" || !d.Generation.Cause.Equal(c.Generation.Cause) {
		t.Fatalf("command round trip: cause %#v", d.Generation.Cause)
	}
	// null decodes to the empty cause.
	var g Generation
	if err := json.Unmarshal([]byte(`{"number":1,"cause":null}`), &g); err != nil || g.Cause != nil {
		t.Fatalf("null cause: %v %#v", err, g.Cause)
	}
}

func TestCauseQueries(t *testing.T) {
	c := Cause{{Kind: ChangeRestart}, {ChangeCrash, "w1"}, {ChangeCrash, "w2"}, {ChangeUnready, "w4"}}
	if !c.Has(ChangeRestart) || !c.Has(ChangeCrash) || c.Has(ChangeJoin) || c.Has(ChangeStart) {
		t.Fatalf("Has on %v", c)
	}
	if got := c.Members(ChangeCrash); !slices.Equal(got, []string{"w1", "w2"}) {
		t.Fatalf("Members(crash) = %v", got)
	}
	if got := c.Members(ChangeLeave); got != nil {
		t.Fatalf("Members(leave) = %v", got)
	}
	for _, tc := range []struct {
		text  string
		start bool
	}{{"start", true}, {"restart", true}, {"restart,crash:w1", true}, {"join:w2", false}, {"crash:w1,unready:w4", false}, {"", false}} {
		if got := mustCause(t, tc.text).IsStart(); got != tc.start {
			t.Errorf("%q.IsStart() = %v", tc.text, got)
		}
	}
	if ChangeKind(0).String() != "kind(0)" || ChangeKind(99).String() != "kind(99)" || ChangeUnready.String() != "unready" {
		t.Fatalf("kind names")
	}
}

// TestCauseLabel is the label table internal/telemetry's GenerationCause
// had for the cause text.
func TestCauseLabel(t *testing.T) {
	for in, want := range map[string]string{
		"start": "start", "join:w3": "join", "join:w3,join:w4": "join", "leave:w2": "leave",
		"crash:w1,unready:w4": "crash", "crash:w1,leave:w2": "crash", "restart,crash:w1": "restart",
		"restart": "restart", "": "other", "unready:w4": "other",
	} {
		if got := mustCause(t, in).Label(); got != want {
			t.Errorf("%q.Label() = %q, want %q", in, got, want)
		}
		if want != "other" && !slices.Contains(telemetry.GenerationCauses, want) {
			t.Errorf("label %q is not one of telemetry.GenerationCauses %v", want, telemetry.GenerationCauses)
		}
	}
}

func mustCause(t *testing.T, text string) Cause {
	t.Helper()
	c, err := ParseCause(text)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FuzzParseCause: a text that parses gives itself back (String), and
// its JSON decodes to the same cause.
func FuzzParseCause(f *testing.F) {
	for _, tc := range causeCases {
		f.Add(tc.text)
	}
	f.Add("restart,bogus")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseCause(text)
		if err != nil {
			return
		}
		if s := c.String(); s != text {
			t.Fatalf("ParseCause(%q).String() = %q", text, s)
		}
		if !utf8.ValidString(text) {
			return // JSON replaces invalid UTF-8, as it did when Cause was a string
		}
		b, err := json.Marshal(Generation{Cause: c})
		if err != nil {
			t.Fatal(err)
		}
		var g Generation
		if err := json.Unmarshal(b, &g); err != nil || !g.Cause.Equal(c) {
			t.Fatalf("JSON round trip of %q: %v %#v", text, err, g.Cause)
		}
	})
}
