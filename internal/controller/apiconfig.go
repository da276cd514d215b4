package controller

// APIConfig secures the HTTP API and the dashboard (issue 13 fills it in).
type APIConfig struct {
	// TokensFile holds the bearer tokens' hashes and roles.
	TokensFile string `yaml:"tokens_file"`
}

func (a *APIConfig) validate() error { return nil }
