"""HL7 v2.5.1 ORU^R01 for a stored specimen, built with hl7apy (validated against the
2.5.1 message structure): MSH, PID when a patient is known, OBR with the accession, one OBX
per class (LOINC, percent, unit %). Result status P (preliminary), F (final) or C
(corrected: final again after an amendment), as the FHIR report's status."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from hl7apy.core import Message

from app.fhir import LOINC_CODES, PANEL

MEDIA_TYPE = "x-application/hl7-v2+er7"
STATUS = {"preliminary": "P", "final": "F", "amended": "C"}


def _escape(text: str) -> str:
    """HL7 escapes for the delimiters |^~\\& in free text."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("~", "\\R\\").replace("&", "\\T\\").replace("\r", " ").replace("\n", " ")


def oru_r01(
    specimen: dict[str, Any],
    diff: dict[str, Any],
    status: str,
    device: str,
    control_id: str | None = None,
) -> str:
    """The ER7 text of the message (segments separated by carriage returns).
    ``control_id`` (MSH-10): the outbox keeps it across retries; default a new one."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    result_status = STATUS[status]
    msg = Message("ORU_R01", version="2.5.1")
    msg.msh.msh_3 = "WBC-CLASSIFIER"
    msg.msh.msh_4 = "LAB"
    msg.msh.msh_7 = now
    msg.msh.msh_9 = "ORU^R01^ORU_R01"
    msg.msh.msh_10 = control_id or uuid.uuid4().hex[:20]
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = "2.5.1"
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    if specimen.get("patient"):
        patient = result.add_group("ORU_R01_PATIENT")
        patient.pid.pid_3 = _escape(specimen["patient"])
        patient.pid.pid_5 = "UNKNOWN"
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    order.obr.obr_3 = _escape(specimen["accession"])
    order.obr.obr_4 = f"{PANEL[0]}^{_escape(PANEL[1])}^LN"
    order.obr.obr_22 = now
    order.obr.obr_25 = result_status
    if specimen.get("finalised_by") and status != "preliminary":
        order.obr.obr_32 = _escape(specimen["finalised_by"])
    for i, (cls, (code, display)) in enumerate(LOINC_CODES.items(), start=1):
        obs = order.add_group("ORU_R01_OBSERVATION")
        obs.obx.obx_1 = str(i)
        obs.obx.obx_2 = "NM"
        obs.obx.obx_3 = f"{code}^{_escape(display)}^LN"
        if diff["classified"]:
            obs.obx.obx_5 = f"{diff['counts'][cls]['percent']:.1f}"
        obs.obx.obx_6 = "%^%^UCUM"
        obs.obx.obx_11 = result_status if diff["classified"] else "X"
        obs.obx.obx_14 = now
        obs.obx.obx_18 = _escape(device)
    msg.validate()
    return msg.to_er7() + "\r"
