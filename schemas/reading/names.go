package reading

const (
	deviceIDPattern   = `^[A-Za-z0-9_-]{1,64}$`
	metricNamePattern = `^[a-z0-9_.]{1,64}$`
)

// ValidDeviceID reports whether id matches ^[A-Za-z0-9_-]{1,64}$.
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validMetricName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
