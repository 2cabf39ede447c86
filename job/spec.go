package job

import (
	"bytes"
	"encoding/json"
	"errors"

	"gopkg.in/yaml.v3"
)

// A job travels inside the coordinators' job spec (its Config field) as
// the job file's YAML text wrapped in a JSON string, so that the raft log
// holds what the user wrote and a worker decodes it as train decodes a job
// file. A JSON object of the same keys is read too (JSON is YAML).

// EncodeConfig is j as a job spec's Config.
func EncodeConfig(j *Job) (json.RawMessage, error) {
	raw, err := yaml.Marshal(j)
	if err != nil {
		return nil, err
	}
	return json.Marshal(string(raw))
}

// ErrNoConfig is DecodeConfig's error for an empty or null Config.
var ErrNoConfig = errors.New("no job config")

// DecodeConfig decodes a job spec's Config over the defaults and
// validates it (Validate). It records each key's line in lines (nil: not
// recorded). A malformed Config is a *strictyaml.Error (naming the key and
// line) or an error naming the config; a bad setting is a
// *trainer.FieldError.
func DecodeConfig(raw json.RawMessage, lines map[string]int) (*Job, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, ErrNoConfig
	}
	var text []byte
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		text = []byte(s)
	case '{':
		text = raw
	default:
		return nil, errors.New("must be the job file's YAML text as a JSON string, or a JSON object")
	}
	j := Default()
	if err := Decode("config", text, j, lines); err != nil {
		return nil, err
	}
	if err := j.Validate(); err != nil {
		return nil, err
	}
	return j, nil
}
