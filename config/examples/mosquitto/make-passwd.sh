#!/bin/sh
# Creates Mosquitto's password file for the accounts of config/examples/hl7-mllp-ward.toml (what
# `vigil mosquitto-acl CONFIG` prints on stderr). Each command asks for that account's password: use the same
# password as the person's [[users]] entry, so one name and password works on the dashboard and on MQTT.
# Mosquitto keeps its own hashes; Vigil's argon2 hashes cannot be converted.
set -e
mosquitto_passwd -c /etc/mosquitto/passwd vigil   # Vigil's own account (mqtt.username, mqtt.password_file)
mosquitto_passwd /etc/mosquitto/passwd nurse
