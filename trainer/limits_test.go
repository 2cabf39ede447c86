package trainer

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// Validate bounds what a run allocates and refuses settings outside their
// ranges, naming the job-file key in a *FieldError.
func TestValidateBoundsAndNamesKey(t *testing.T) {
	cases := []struct {
		field, want string
		mut         func(*Config)
	}{
		{"hidden", "268435456", func(c *Config) { c.Hidden = []int{1000000000} }},
		{"hidden", "parameters", func(c *Config) { c.Hidden = []int{30000, 30000} }},
		{"hidden[1]", "65536", func(c *Config) { c.Hidden = []int{8, 70000} }},
		{"hidden[0]", "want 1..", func(c *Config) { c.Hidden = []int{0} }},
		{"hidden", "at most 63", func(c *Config) { c.Hidden = make([]int, 64) }},
		{"batch", "want 1..", func(c *Config) { c.Batch = 1<<20 + 1 }},
		{"batch", "activations", func(c *Config) { c.Batch, c.Hidden = 1<<20, []int{2048} }},
		{"hidden", "activations", func(c *Config) { c.Batch, c.Hidden = 1, []int{65536, 1, 65536, 1, 65536, 1, 65536, 1, 65536} }},
		{"threads", "want 0", func(c *Config) { c.Threads = -1 }},
		{"lr", "finite", func(c *Config) { c.LR = math.Inf(1) }},
		{"lr", "finite", func(c *Config) { c.LR = math.NaN() }},
		{"weight_decay", "finite", func(c *Config) { c.WeightDecay = math.Inf(1) }},
		{"max_epochs", "want 1..", func(c *Config) { c.MaxEpochs = 1e9 }},
		{"patience", "want 1..", func(c *Config) { c.Patience = 0 }},
		{"shards", "want 1..", func(c *Config) { c.Shards = 1 << 20 }},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		c.mut(&cfg)
		err := cfg.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrConfig) || fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v (field %v), want field %s and %q", c.field, err, fe, c.field, c.want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	// The input dimension counts too once it is known.
	cfg := DefaultConfig()
	cfg.Hidden = []int{65536}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.ValidateFor(8); err != nil {
		t.Fatal(err)
	}
	if err := cfg.ValidateFor(4096); err == nil || !strings.Contains(err.Error(), "input dimension 4096") {
		t.Fatalf("ValidateFor(4096): %v", err)
	}
}
