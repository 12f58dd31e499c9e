# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vigil_sim_global_optspecs
    string join \n list-scenarios scenario= scenario-file= device= output= beds= bed= speed= seed= start-time= man= device-id= h/help V/version
end

function __fish_vigil_sim_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vigil_sim_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vigil_sim_using_subcommand
    set -l cmd (__fish_vigil_sim_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l scenario -d 'Scenario to run (see --list-scenarios)' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l scenario-file -d 'Run your own scenario file instead of a bundled one (same TOML schema as simulator/scenarios/)' -r -F
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l device -d 'Device personality: masimo, nonin, hl7, s5 or intellivue (answers association and polls on pty; on stdout/file it writes what a monitor sends in a polled session, a capture)' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l output -d 'stdout, pty, serial:PATH, mllp:HOST:PORT, tcp-listen:[HOST:]PORT (bed K on PORT+K-1), udp:PORT (an IntelliVue\'s LAN interface on 127.0.0.1, bed K on PORT+K-1) or file:PATH' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l beds -d 'Number of beds (default: the scenario\'s own count; patients repeat with their own random streams)' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l bed -d 'Run only bed K (1-based) of a multi-bed scenario, e.g. to send one chair to stdout' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l speed -d 'Virtual seconds per real second (e.g. 60), or max (as fast as the reader takes them)' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l seed -d 'Random seed (default: random, printed so the run can be repeated)' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l start-time -d 'Device clock at the start, RFC 3339 or `now`. Default: now, except with --seed and --speed max, where it is 2026-01-01T08:00:00Z so the output is identical byte for byte from run to run' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l man -d 'Write the manual page (vigil-sim.1) and shell completions into DIR and exit (for the Debian package)' -r -F
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l device-id -d 'HL7 MSH-3 EUI-64 for a single bed (default: derived from the bed and --seed, or from seed 0 without --seed)' -r
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -l list-scenarios -d 'Print the bundled scenarios with a one-line description and exit'
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -s h -l help -d 'Print help'
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -s V -l version -d 'Print version'
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -f -a "alert-manager" -d 'Play an IHE PCD ACM Alert Manager: take ORU^R40 over MLLP, answer ACK^R40, optionally acknowledge each new alarm with ORA^R41 after SECS, and print every message as one JSON line on stdout'
complete -c vigil-sim -n "__fish_vigil_sim_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vigil-sim -n "__fish_vigil_sim_using_subcommand alert-manager" -l listen -d 'Address to listen on, e.g. 127.0.0.1:2576 (port 0: any free port, printed in the first line)' -r
complete -c vigil-sim -n "__fish_vigil_sim_using_subcommand alert-manager" -l ack-after -d 'Send ORA^R41 "Accepted" (by a simulated nurse) this many seconds after a new alarm\'s first message' -r
complete -c vigil-sim -n "__fish_vigil_sim_using_subcommand alert-manager" -l ignore-first -d 'Leave the first N alarm messages unanswered, like a hung manager' -r
complete -c vigil-sim -n "__fish_vigil_sim_using_subcommand alert-manager" -l reject -d 'Refuse every alarm with AR and a reason (heartbeats are still accepted)'
complete -c vigil-sim -n "__fish_vigil_sim_using_subcommand alert-manager" -s h -l help -d 'Print help'
complete -c vigil-sim -n "__fish_vigil_sim_using_subcommand help; and not __fish_seen_subcommand_from alert-manager help" -f -a "alert-manager" -d 'Play an IHE PCD ACM Alert Manager: take ORU^R40 over MLLP, answer ACK^R40, optionally acknowledge each new alarm with ORA^R41 after SECS, and print every message as one JSON line on stdout'
complete -c vigil-sim -n "__fish_vigil_sim_using_subcommand help; and not __fish_seen_subcommand_from alert-manager help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
