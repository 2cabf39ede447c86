package state

import (
	"fmt"
	"slices"
	"strings"
)

// ChangeKind is the kind of one membership change of a generation.
type ChangeKind uint8

// Change kinds. Start and Restart name no member; the others name one.
const (
	// ChangeStart: the job's first generation; its members begin together.
	ChangeStart ChangeKind = iota + 1
	// ChangeRestart: every member was lost; the members begin together
	// from the last checkpoint.
	ChangeRestart
	// ChangeJoin: Member joins.
	ChangeJoin
	// ChangeLeave: Member left gracefully.
	ChangeLeave
	// ChangeCrash: the leader found Member dead.
	ChangeCrash
	// ChangeUnready: Member goes after a crash because it does not hold
	// the job's state yet (its join had not taken effect).
	ChangeUnready
	// ChangeRelink: Member reported a failed data-plane link while every
	// member is alive; the same members reconcile on fresh connections.
	ChangeRelink
)

var changeKindNames = [...]string{
	ChangeStart: "start", ChangeRestart: "restart", ChangeJoin: "join",
	ChangeLeave: "leave", ChangeCrash: "crash", ChangeUnready: "unready",
	ChangeRelink: "relink",
}

func (k ChangeKind) String() string {
	if int(k) < len(changeKindNames) && changeKindNames[k] != "" {
		return changeKindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// hasMember reports whether a change of kind k names a member.
func (k ChangeKind) hasMember() bool { return k >= ChangeJoin && k <= ChangeRelink }

func changeKindOf(name string) (ChangeKind, bool) {
	for k, n := range changeKindNames {
		if n != "" && n == name {
			return ChangeKind(k), true
		}
	}
	return 0, false
}

// Change is one membership change: its kind and, except for start and
// restart, the worker it concerns.
type Change struct {
	Kind   ChangeKind
	Member string
}

// String is the change's text: "start", "restart" or "<kind>:<member>".
func (c Change) String() string {
	if c.Kind.hasMember() {
		return c.Kind.String() + ":" + c.Member
	}
	return c.Kind.String()
}

func parseChange(tok string) (Change, error) {
	name, member, named := strings.Cut(tok, ":")
	k, ok := changeKindOf(name)
	switch {
	case !ok:
		return Change{}, fmt.Errorf("unknown change kind %q", name)
	case k.hasMember() && !named:
		return Change{}, fmt.Errorf("%s without a member", name)
	case k.hasMember() && member == "":
		return Change{}, fmt.Errorf("%s with an empty member", name)
	case !k.hasMember() && named:
		return Change{}, fmt.Errorf("%s names a member", name)
	}
	return Change{Kind: k, Member: member}, nil
}

// Cause is why the leader made a generation: its changes in the order the
// leader found them ("restart" first when there is one).
//
// Its text (String, and its JSON in snapshots, log entries and on the wire)
// is the changes' texts joined with commas: "start",
// "restart,crash:w1", "join:w2,leave:w3", "crash:w1,unready:w4".
type Cause []Change

// ParseCause parses a cause's text; "" is the empty cause. Text that does
// not begin with a change, an unknown kind, a member on start or restart
// and a missing or empty member are errors.
//
// Worker ids are not restricted, so a member may hold a comma: text
// after a comma that does not parse as a change continues the member
// before it ("crash:a,b" is the crash of worker "a,b"). So every text the
// leader wrote decodes, and String gives it back byte for byte.
func ParseCause(text string) (Cause, error) {
	if text == "" {
		return nil, nil
	}
	var c Cause
	memberFrom := -1 // offset in text of the last change's member, -1 if it has none
	for off := 0; off <= len(text); {
		end := strings.IndexByte(text[off:], ',')
		if end < 0 {
			end = len(text)
		} else {
			end += off
		}
		ch, err := parseChange(text[off:end])
		switch {
		case err == nil:
			c = append(c, ch)
			memberFrom = -1
			if ch.Kind.hasMember() {
				memberFrom = end - len(ch.Member)
			}
		case memberFrom >= 0:
			c[len(c)-1].Member = text[memberFrom:end]
		default:
			return nil, fmt.Errorf("%w: generation cause %q: %v", ErrInvalidArgument, text, err)
		}
		off = end + 1
	}
	return c, nil
}

// String is the cause's text (see Cause).
func (c Cause) String() string {
	var b strings.Builder
	for i, ch := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(ch.String())
	}
	return b.String()
}

// MarshalText gives String: a Cause encodes in JSON as the string it was
// before it had a type.
func (c Cause) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses text with ParseCause.
func (c *Cause) UnmarshalText(text []byte) error {
	p, err := ParseCause(string(text))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

// Has reports whether the cause holds a change of kind k.
func (c Cause) Has(k ChangeKind) bool {
	return slices.ContainsFunc(c, func(ch Change) bool { return ch.Kind == k })
}

// Members lists the members of the changes of kind k, in order.
func (c Cause) Members(k ChangeKind) []string {
	var out []string
	for _, ch := range c {
		if ch.Kind == k {
			out = append(out, ch.Member)
		}
	}
	return out
}

// IsStart reports a generation whose members all begin together: the
// job's first (start) or one after every worker was lost (restart).
func (c Cause) IsStart() bool { return c.Has(ChangeStart) || c.Has(ChangeRestart) }

// Equal reports whether c and o hold the same changes in the same order.
func (c Cause) Equal(o Cause) bool { return slices.Equal(c, o) }

// Label is the cause's metrics label (internal/telemetry's
// GenerationCauses): its most telling kind, by priority restart, start,
// crash, relink, leave, join; "other" for the empty cause.
func (c Cause) Label() string {
	for _, k := range []ChangeKind{ChangeRestart, ChangeStart, ChangeCrash, ChangeRelink, ChangeLeave, ChangeJoin} {
		if c.Has(k) {
			return k.String()
		}
	}
	return "other"
}
