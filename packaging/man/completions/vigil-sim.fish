complete -c vigil-sim -l scenario -d 'Scenario to run (see --list-scenarios)' -r
complete -c vigil-sim -l scenario-file -d 'Run your own scenario file instead of a bundled one (same TOML schema as simulator/scenarios/)' -r -F
complete -c vigil-sim -l device -d 'Device personality: masimo, nonin or hl7' -r
complete -c vigil-sim -l output -d 'stdout, pty, serial:PATH, mllp:HOST:PORT or file:PATH' -r
complete -c vigil-sim -l beds -d 'Number of beds (default: the scenario\'s own count; patients repeat with their own random streams)' -r
complete -c vigil-sim -l bed -d 'Run only bed K (1-based) of a multi-bed scenario, e.g. to send one chair to stdout' -r
complete -c vigil-sim -l speed -d 'Virtual seconds per real second (e.g. 60), or max (as fast as the reader takes them)' -r
complete -c vigil-sim -l seed -d 'Random seed (default: random, printed so the run can be repeated)' -r
complete -c vigil-sim -l start-time -d 'Device clock at the start, RFC 3339 or `now`. Default: now, except with --seed and --speed max, where it is 2026-01-01T08:00:00Z so the output is identical byte for byte from run to run' -r
complete -c vigil-sim -l man -d 'Write the manual page (vigil-sim.1) and shell completions into DIR and exit (for the Debian package)' -r -F
complete -c vigil-sim -l device-id -d 'HL7 MSH-3 EUI-64 for a single bed (default: derived from the bed and --seed, or from seed 0 without --seed)' -r
complete -c vigil-sim -l list-scenarios -d 'Print the bundled scenarios with a one-line description and exit'
complete -c vigil-sim -s h -l help -d 'Print help'
complete -c vigil-sim -s V -l version -d 'Print version'
