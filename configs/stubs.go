package configs

import "errors"

// Load reads, parses and validates a config file.
func Load(path string) (*Config, error) { return nil, errors.New("configs: not implemented") }

// Parse parses and validates config text; name is used in error messages
// and relative paths resolve against dir.
func Parse(name, dir string, data []byte) (*Config, error) {
	return nil, errors.New("configs: not implemented")
}

// Account returns the account with this address (case-insensitive domain).
func (c *Config) Account(address string) (*Account, bool) { return nil, false }
