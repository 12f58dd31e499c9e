# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vigil_global_optspecs
    string join \n log-format= h/help V/version
end

function __fish_vigil_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vigil_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vigil_using_subcommand
    set -l cmd (__fish_vigil_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vigil -n "__fish_vigil_needs_command" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_needs_command" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_needs_command" -s V -l version -d 'Print version'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "run" -d 'Run the daemon (the default)'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "check-config" -d 'Validate a configuration file and print its beds and sources'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "print-default-config" -d 'Print the embedded default configuration'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "replay" -d 'Run the alarm engine over a recording and print every alarm event as JSON lines'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "decode" -d 'Decode a raw device capture and print one JSON line per reading and per device alarm, then a summary of frames good and bad'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "hash-password" -d 'Read a password on standard input and print its argon2 hash for `[[users]] password_hash`'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "self-test" -d 'Send a marked test alarm through a running daemon\'s whole alarm path for one bed (engine, store, MQTT, dashboard, and this command\'s own MQTT subscriber) and report each hop with its time. Exit 0 when every hop passed, 1 when one failed, 69 when the test could not run (daemon unreachable, sign-in refused, not an admin)'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "man" -d 'Write the manual pages (vigil.1, vigil-run.1, …) and shell completions (bash, zsh, fish) into a directory. Used to make `packaging/man/` and `packaging/completions/`'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "mosquitto-acl" -d 'Print the Mosquitto ACL that gives an external broker Vigil\'s topic rights (nurses and admins publish commands only on cmd/{bed}/{their name}); the commands that make its password file go to stderr'
complete -c vigil -n "__fish_vigil_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vigil -n "__fish_vigil_using_subcommand run" -s c -l config -d 'Configuration file. Without it Vigil runs the built-in demo (config/demo.toml: simulated chairs, loopback only, actions without sign-in)' -r -F
complete -c vigil -n "__fish_vigil_using_subcommand run" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand run" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand check-config" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand print-default-config" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand print-default-config" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l profile -d 'Alarm profile: a name (looked up in `<profile-dir>/profiles/`, then built in) or a path to a .toml file' -r
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l compare -d 'A second profile to run on the same data; prints how many alarms each raises' -r
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l bed -d 'Only replay this bed (default: every bed named in the file)' -r
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l profile-dir -d 'Directory whose `profiles/` folder is searched for profile names' -r -F
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l start -d 'Wall-clock time of second 0 when timestamps are seconds from start (RFC 3339)' -r
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l format -d 'Input format: `auto` (CSV, HL7 with or without MLLP framing, Masimo ASCII or an S/5 DRI capture, by content), `csv`, `masimo`, `nonin` (format #8 binary, one frame per second), `hl7`, `s5` (DRI records as the monitor sends them; times from the records) or `intellivue` (Data Export as the monitor sends it, e.g. `vigil-sim --device intellivue --output file:…`)' -r
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand replay" -l summary-only -d 'Print only the summary lines, not every event'
complete -c vigil -n "__fish_vigil_using_subcommand replay" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand decode" -l format -d 'masimo, nonin, hl7, intellivue (the MIB/RS-232 byte stream from the monitor) or s5' -r
complete -c vigil -n "__fish_vigil_using_subcommand decode" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand decode" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand hash-password" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand hash-password" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand self-test" -l bed -d 'The bed to test. Default: the daemon\'s first bed' -r
complete -c vigil -n "__fish_vigil_using_subcommand self-test" -s c -l config -d 'The daemon\'s configuration file: the dashboard\'s address is taken from `dashboard.listen`' -r -F
complete -c vigil -n "__fish_vigil_using_subcommand self-test" -l url -d 'The dashboard\'s address instead of --config, e.g. http://127.0.0.1:8080' -r
complete -c vigil -n "__fish_vigil_using_subcommand self-test" -l user -d 'An admin of the configuration (`[[users]]`); the password is read from the environment variable VIGIL_PASSWORD, else from the first line of standard input. Without it only the loopback demo (actions without sign-in) lets the test run' -r
complete -c vigil -n "__fish_vigil_using_subcommand self-test" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand self-test" -l json -d 'Print the report as one JSON object instead of a table'
complete -c vigil -n "__fish_vigil_using_subcommand self-test" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand man" -l out -d 'Where to write them (created if missing)' -r -F
complete -c vigil -n "__fish_vigil_using_subcommand man" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand man" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand mosquitto-acl" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c vigil -n "__fish_vigil_using_subcommand mosquitto-acl" -s h -l help -d 'Print help'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "run" -d 'Run the daemon (the default)'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "check-config" -d 'Validate a configuration file and print its beds and sources'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "print-default-config" -d 'Print the embedded default configuration'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "replay" -d 'Run the alarm engine over a recording and print every alarm event as JSON lines'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "decode" -d 'Decode a raw device capture and print one JSON line per reading and per device alarm, then a summary of frames good and bad'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "hash-password" -d 'Read a password on standard input and print its argon2 hash for `[[users]] password_hash`'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "self-test" -d 'Send a marked test alarm through a running daemon\'s whole alarm path for one bed (engine, store, MQTT, dashboard, and this command\'s own MQTT subscriber) and report each hop with its time. Exit 0 when every hop passed, 1 when one failed, 69 when the test could not run (daemon unreachable, sign-in refused, not an admin)'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "man" -d 'Write the manual pages (vigil.1, vigil-run.1, …) and shell completions (bash, zsh, fish) into a directory. Used to make `packaging/man/` and `packaging/completions/`'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "mosquitto-acl" -d 'Print the Mosquitto ACL that gives an external broker Vigil\'s topic rights (nurses and admins publish commands only on cmd/{bed}/{their name}); the commands that make its password file go to stderr'
complete -c vigil -n "__fish_vigil_using_subcommand help; and not __fish_seen_subcommand_from run check-config print-default-config replay decode hash-password self-test man mosquitto-acl help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
