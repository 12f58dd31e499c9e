"""An independent IHE PCD ACM Alert Manager for CI (PyPI `hl7`): parses every ORU^R40 Vigil sends over MLLP,
checks the message header, the one OBR and every OBX facet (or the heartbeat's) against IHE PCD TF-2 Rev. 9.0
(OBR-29 the alert id, OBR-3 one per message; facet 1 a physiological alarm's own event code; OBX-11 `F` on every
OBX), answers ACK (AA when the message passed, AE with the reason when not) and writes one JSON line per message
to the results file.

    python3 tests/ci/acm_manager.py PORT RESULTS.jsonl
"""

import asyncio
import json
import sys

import hl7
from hl7.mllp import start_hl7_server

MDC_EVT_ALARM = "196616^MDC_EVT_ALARM^MDC"
ALERT_FACETS = {
    3: "68481^MDC_ATTR_EVENT_PHASE^MDC",
    4: "68482^MDC_ATTR_ALARM_STATE^MDC",
    5: "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC",
    6: "68484^MDC_ATTR_ALARM_PRIORITY^MDC",
    7: "68485^MDC_ATTR_ALERT_TYPE^MDC",
    8: "68546^MDC_ATTR_ALERT_TEXT^MDC",
}
ALLOWED = {
    3: {"start", "update", "end"},
    4: {"active", "latched", "inactive"},
    5: {"enabled", "audio-paused", "alert-acknowledged"},
    6: {"PH", "PM", "PL"},
    7: {"SP", "ST", "SA"},
}


def check(msg):
    """The JSON line for one message; raises AssertionError naming what is wrong."""
    msh = msg.segment("MSH")
    assert str(msh[9]) == "ORU^R40^ORU_R40", f"MSH-9 {msh[9]}"
    assert str(msh[12]) == "2.6", f"MSH-12 {msh[12]}"
    assert str(msh[15]) == "AL" and str(msh[16]) == "NE", "MSH-15/16 must be AL/NE"
    assert str(msh[21]).startswith("IHE_PCD_ACM_001^IHE PCD^"), f"MSH-21 {msh[21]}"
    obrs = msg.segments("OBR")
    assert len(obrs) == 1, "one OBR per alarm"
    obr = obrs[0]
    assert str(obr[4]) == "196616^MDC_EVT_ALARM^MDC", f"OBR-4 {obr[4]}"
    # OBR-29 (EIP): the filler's id in component 2, its first subcomponent the alert id (Table B.7.1-1, E.3.1).
    parent = str(obr[29]).split("^")
    alert_id = parent[1].split("&")[0] if len(parent) > 1 else ""
    assert alert_id, f"OBR-29 carries the alert id: {obr[29]}"
    indication = str(obr[3][0][0])
    assert indication and indication != alert_id, f"OBR-3 identifies this message, not the alert: {obr[3]}"
    facets = {}
    for obx in msg.segments("OBX"):
        assert str(obx[11]) == "F", f"OBX-11 of {obx[3]} is {obx[11]!r}, not F"
        sub = str(obx[4]).split(".")
        if len(sub) == 5:
            facets[int(sub[4])] = obx
    if str(facets.get(1, [None] * 4)[3]) == "196614^MDC_EVT_ACTIVE^MDC":
        assert str(facets[6][5]) == "PN", "heartbeat priority PN"
        assert str(facets[9][3]).startswith("67860^MDC_ATTR_CONFIRM_TIMEOUT"), "heartbeat confirm timeout"
        phase = str(facets[3][5])
        assert phase in ALLOWED[3]
        return {"kind": "heartbeat", "phase": phase, "state": str(facets[4][5]), "timeout_s": str(facets[9][5])}
    for n, code in ALERT_FACETS.items():
        assert n in facets, f"facet {n} missing"
        assert str(facets[n][3]) == code, f"facet {n} OBX-3 {facets[n][3]} != {code}"
        if n in ALLOWED:
            assert str(facets[n][5]) in ALLOWED[n], f"facet {n} value {facets[n][5]}"
    assert 1 in facets and 2 in facets, "facet 1 (event) or 2 (source / value) missing"
    alert_type = str(facets[7][5])
    if str(facets[1][3]) == MDC_EVT_ALARM:
        assert alert_type != "SP" or str(facets[1][5]) == MDC_EVT_ALARM, "a physiological alarm's code goes in OBX-3"
        event = str(facets[1][5])
    else:
        assert alert_type == "SP", f"facet 1 OBX-3 {facets[1][3]} on a non-physiological alert"
        event = str(facets[1][3])
    flags = {str(f) for f in facets[1][8]} if str(facets[1][8]) else set()
    assert not flags & {"PH", "PM", "PL", "PN", "SP", "ST", "SA"}, f"deprecated OBX-8 priority/type {flags}"
    source = facets[2]
    line = {
        "kind": "alert",
        "alert_id": alert_id,
        "indication_id": indication,
        "bed": str(msg.segment("PV1")[3][0][2]),
        "event": event,
        "phase": str(facets[3][5]),
        "state": str(facets[4][5]),
        "inactivation": str(facets[5][5]),
        "priority": str(facets[6][5]),
        "type": str(facets[7][5]),
        "text": msg.unescape(str(facets[8][5])),
        "source": str(source[3]),
    }
    if str(source[2]) == "NM":
        line["value"] = float(str(source[5]))
        line["unit"] = str(source[6])
    return line


async def main(port, results):
    out = open(results, "a", buffering=1)

    async def client(reader, writer):
        while not reader.at_eof():
            try:
                msg = await reader.readmessage()
            except asyncio.IncompleteReadError:
                break
            try:
                line = check(msg)
                code = "AA"
            except (AssertionError, IndexError, KeyError, ValueError) as e:
                line = {"kind": "error", "reason": str(e) or repr(e), "message": str(msg).replace("\r", "\n")}
                code = "AE"
            out.write(json.dumps(line) + "\n")
            writer.writemessage(msg.create_ack(ack_code=code))
            await writer.drain()

    async with await start_hl7_server(client, host="127.0.0.1", port=port) as server:
        print(f"acm_manager: listening on 127.0.0.1:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
