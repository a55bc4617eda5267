"""Operations: the HTTP endpoint (probes, status page, debug pages), metrics, query log."""
