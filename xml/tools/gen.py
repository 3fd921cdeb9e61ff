#!/usr/bin/env python3
"""Writes the object definitions in xml/ from the compact tables below.

The facts (ids, names, types, operations, multiplicity, mandatory, ranges, units, versions)
follow the published OMA LwM2M / IPSO registry; every description is our own short wording.
Run from the repository root: `python3 xml/tools/gen.py`. The output is committed, so the
gateway does not need Python; rerun after editing a table and commit both.
"""
import os
from xml.sax.saxutils import escape

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# Resource row: (id, name, ops, multiple, mandatory, type, range, units, description)
# ops: "R" "W" "RW" "E" or "" ; multiple: "S"/"M" ; mandatory: "M"/"O"

# IPSO reusable resources: id -> (name, ops, type, range, units, description).
IPSO = {
    5500: ("Digital Input State", "R", "Boolean", "", "", "Current state of the digital input."),
    5501: ("Digital Input Counter", "R", "Integer", "", "", "How many times the input went active."),
    5502: ("Digital Input Polarity", "RW", "Boolean", "", "", "True when the input logic is inverted."),
    5503: ("Digital Input Debounce", "RW", "Integer", "", "ms", "Debounce time of the input."),
    5504: ("Digital Input Edge Selection", "RW", "Integer", "1..3", "", "Edges counted: 1 falling, 2 rising, 3 both."),
    5505: ("Digital Input Counter Reset", "E", "", "", "", "Sets the input counter back to zero."),
    5506: ("Current Time", "RW", "Time", "", "", "Clock value in seconds since the Unix epoch."),
    5507: ("Fractional Time", "RW", "Float", "0-1", "s", "Sub-second part of the clock value."),
    5508: ("Min X Value", "R", "Float", "", "", "Lowest X reading since power-up or the last reset."),
    5509: ("Max X Value", "R", "Float", "", "", "Highest X reading since power-up or the last reset."),
    5510: ("Min Y Value", "R", "Float", "", "", "Lowest Y reading since power-up or the last reset."),
    5511: ("Max Y Value", "R", "Float", "", "", "Highest Y reading since power-up or the last reset."),
    5512: ("Min Z Value", "R", "Float", "", "", "Lowest Z reading since power-up or the last reset."),
    5513: ("Max Z Value", "R", "Float", "", "", "Highest Z reading since power-up or the last reset."),
    5514: ("Latitude", "R", "String", "", "", "Latitude as a decimal number in WGS84."),
    5515: ("Longitude", "R", "String", "", "", "Longitude as a decimal number in WGS84."),
    5516: ("Uncertainty", "R", "String", "", "", "Accuracy of the position in metres."),
    5517: ("Velocity", "R", "Opaque", "", "", "Velocity encoded as in 3GPP TS 23.032; may be absent when still."),
    5518: ("Timestamp", "R", "Time", "", "", "When the reported value was measured."),
    5519: ("Min Limit", "R", "Float", "", "", "Lowest position the actuator can take."),
    5520: ("Max Limit", "R", "Float", "", "", "Highest position the actuator can take."),
    5521: ("Delay Duration", "RW", "Float", "", "s", "Length of the delay."),
    5522: ("Clip", "RW", "Opaque", "", "", "Audio data to be played."),
    5523: ("Trigger", "E", "", "", "", "Starts the action."),
    5524: ("Duration", "RW", "Float", "", "s", "Longest time the playback may last."),
    5525: ("Minimum Off-time", "RW", "Float", "", "s", "Least time to stay off between two activations."),
    5526: ("Timer Mode", "RW", "Integer", "0-4", "", "Timing pattern: 0 off, 1 one-shot, 2 interval, 3 delay on pick-up, 4 delay on drop-out."),
    5527: ("Text", "RW", "String", "", "", "Text to show."),
    5528: ("X Coordinate", "RW", "Integer", "", "", "Column where the text starts."),
    5529: ("Y Coordinate", "RW", "Integer", "", "", "Row where the text starts."),
    5530: ("Clear Display", "E", "", "", "", "Blanks the display."),
    5531: ("Contrast", "RW", "Float", "0-100", "%", "Display contrast in percent."),
    5532: ("Increase Input State", "R", "Boolean", "", "", "True while the up control is active."),
    5533: ("Decrease Input State", "R", "Boolean", "", "", "True while the down control is active."),
    5534: ("Counter", "RW", "Integer", "", "", "Times the output went from off to on; writing 0 clears it."),
    5536: ("Current Position", "RW", "Float", "0-100", "%", "Position of the actuator; writing it moves there."),
    5537: ("Transition Time", "RW", "Float", "", "s", "How long a move to a new position should take."),
    5538: ("Remaining Time", "R", "Float", "", "s", "Time left in the operation under way."),
    5541: ("Up Counter", "RW", "Integer", "", "", "Times the up control was used; writing 0 clears it."),
    5542: ("Down Counter", "RW", "Integer", "", "", "Times the down control was used; writing 0 clears it."),
    5543: ("Digital State", "R", "Boolean", "", "", "Current state of the output."),
    5544: ("Cumulative Time", "RW", "Float", "", "s", "Total time spent running; writing 0 clears it."),
    5545: ("Max X Coordinate", "R", "Integer", "", "", "Last column before text wraps."),
    5546: ("Max Y Coordinate", "R", "Integer", "", "", "Last row before text wraps."),
    5547: ("Multi-state Input", "R", "Integer", "", "", "Position the selector is in."),
    5548: ("Level", "RW", "Float", "0-100", "%", "Level in percent."),
    5550: ("Digital Output State", "RW", "Boolean", "", "", "Current state of the digital output."),
    5551: ("Digital Output Polarity", "RW", "Boolean", "", "", "True when the output logic is inverted."),
    5600: ("Analog Input Current Value", "R", "Float", "", "", "Latest value read from the analog input."),
    5601: ("Min Measured Value", "R", "Float", "", "", "Lowest value seen since power-up or the last reset."),
    5602: ("Max Measured Value", "R", "Float", "", "", "Highest value seen since power-up or the last reset."),
    5603: ("Min Range Value", "R", "Float", "", "", "Lowest value the sensor is able to measure."),
    5604: ("Max Range Value", "R", "Float", "", "", "Highest value the sensor is able to measure."),
    5605: ("Reset Min and Max Measured Values", "E", "", "", "", "Restarts min/max tracking from the current value."),
    5650: ("Analog Output Current Value", "RW", "Float", "0..1", "", "Value driven on the analog output."),
    5700: ("Sensor Value", "R", "Float", "", "", "Latest measured value."),
    5701: ("Sensor Units", "R", "String", "", "", "Unit of the measured value."),
    5702: ("X Value", "R", "Float", "", "", "Reading along the X axis."),
    5703: ("Y Value", "R", "Float", "", "", "Reading along the Y axis."),
    5704: ("Z Value", "R", "Float", "", "", "Reading along the Z axis."),
    5705: ("Compass Direction", "R", "Float", "0..360", "deg", "Heading in degrees."),
    5706: ("Colour", "RW", "String", "", "", "Colour value written in some colour space."),
    5750: ("Application Type", "RW", "String", "", "", "Free text naming what the device is used for."),
    5751: ("Sensor Type", "R", "String", "", "", "Kind of sensing element."),
    5805: ("Cumulative active power", "R", "Float", "", "Wh", "Energy used since start-up or the last reset."),
    5800: ("Instantaneous active power", "R", "Float", "", "W", "Active power drawn right now."),
    5801: ("Min Measured active power", "R", "Float", "", "W", "Lowest active power seen since power-up."),
    5802: ("Max Measured active power", "R", "Float", "", "W", "Highest active power seen since power-up."),
    5803: ("Min Range active power", "R", "Float", "", "W", "Lowest active power the meter can measure."),
    5804: ("Max Range active power", "R", "Float", "", "W", "Highest active power the meter can measure."),
    5806: ("Active Power Calibration", "W", "Float", "", "W", "Write the known load to calibrate active power against it."),
    5810: ("Instantaneous reactive power", "R", "Float", "", "var", "Reactive power right now."),
    5811: ("Min Measured reactive power", "R", "Float", "", "var", "Lowest reactive power seen since power-up."),
    5812: ("Max Measured reactive power", "R", "Float", "", "var", "Highest reactive power seen since power-up."),
    5813: ("Min Range reactive power", "R", "Float", "", "var", "Lowest reactive power the meter can measure."),
    5814: ("Max Range reactive power", "R", "Float", "", "var", "Highest reactive power the meter can measure."),
    5815: ("Cumulative reactive power", "R", "Float", "", "varh", "Reactive energy since start-up or the last reset."),
    5816: ("Reactive Power Calibration", "W", "Float", "", "var", "Write the known load to calibrate reactive power against it."),
    5820: ("Power factor", "R", "Float", "", "", "Power factor of the load, where it applies."),
    5821: ("Current Calibration", "RW", "Float", "", "", "Calibration applied to the reading."),
    5822: ("Reset Cumulative energy", "E", "", "", "", "Zeroes the cumulative energy counters."),
    5850: ("On/Off", "RW", "Boolean", "", "", "True switches on, false switches off."),
    5851: ("Dimmer", "RW", "Integer", "0..100", "/100", "Dimming level in percent."),
    5852: ("On time", "RW", "Integer", "", "s", "Time spent on; writing 0 restarts the count."),
    5853: ("Muti-state Output", "RW", "String", "", "", "Named state of an output with several levels, e.g. a pilot wire."),
    5854: ("Off Time", "RW", "Integer", "", "s", "Time spent off; writing 0 restarts the count."),
    5903: ("Busy to Clear delay", "RW", "Integer", "", "ms", "Delay before a detection is reported as cleared."),
    5904: ("Clear to Busy delay", "RW", "Integer", "", "ms", "Delay before a detection is reported as busy."),
    5910: ("Bitmap Input", "R", "Integer", "", "", "One bit per digital input, packed into an integer."),
    5911: ("Bitmap Input Reset", "E", "", "", "", "Clears the bitmap value."),
    5912: ("Element Description", "RW", "String", "", "", "Meaning of each bit, least significant first."),
    6042: ("Measurement Quality Indicator", "R", "Integer", "0..23", "", "Quality class a smart sensor gives the value."),
    6049: ("Measurement Quality Level", "R", "Integer", "0..100", "", "Confidence in the value, 100 being fully checked."),
    6050: ("Fractional Timestamp", "R", "Float", "0..1", "s", "Sub-second part of the timestamp."),
}


def ipso(rid, mandatory="O", multiple="S", **over):
    """A row for a reusable IPSO resource, optionally overriding some facts."""
    name, ops, typ, rng, units, desc = IPSO[rid]
    name = over.get("name", name)
    ops = over.get("ops", ops)
    typ = over.get("type", typ)
    rng = over.get("range", rng)
    units = over.get("units", units)
    desc = over.get("desc", desc)
    return (rid, name, ops, multiple, mandatory, typ, rng, units, desc)


def r(rid, name, ops, multiple, mandatory, typ, rng="", units="", desc=""):
    return (rid, name, ops, multiple, mandatory, typ, rng, units, desc)


# Sensors of IPSO version 1.1 that share one layout (value, min/max, range, units, quality).
def simple_sensor_11(extra=()):
    rows = [ipso(5700, "M"), ipso(5601), ipso(5602), ipso(5603), ipso(5604), ipso(5701), ipso(5605)]
    rows += list(extra)
    rows += [ipso(5750), ipso(5518), ipso(6050), ipso(6042), ipso(6049)]
    return rows


# Sensors still at IPSO version 1.0 that share one layout (value, units, min/max, range,
# reset, calibration). They predate the timestamp and quality resources of version 1.1.
def simple_sensor_10():
    return [ipso(5700, "M"), ipso(5701), ipso(5601), ipso(5602), ipso(5603), ipso(5604),
            ipso(5605), ipso(5821), ipso(5750)]


OBJECTS = []


def obj(oid, name, desc, version, lwm2m, multiple, mandatory, rows, urn=None, file=None):
    OBJECTS.append(dict(id=oid, name=name, desc=desc, version=version, lwm2m=lwm2m,
                        multiple=multiple, mandatory=mandatory, rows=rows, urn=urn, file=file))


# ---------------------------------------------------------------- OMA core objects

SECURITY = [
    r(0, "LWM2M  Server URI", "", "S", "M", "String", "0..255", "", "URI of the server this instance gives credentials for."),
    r(1, "Bootstrap-Server", "", "S", "M", "Boolean", "", "", "True when the instance describes a bootstrap server."),
    r(2, "Security Mode", "", "S", "M", "Integer", "0..4", "", "0 PSK, 1 raw public key, 2 certificate, 3 no security, 4 certificate with EST."),
    r(3, "Public Key or Identity", "", "S", "M", "Opaque", "", "", "Client certificate, public key or PSK identity."),
    r(4, "Server Public Key", "", "S", "M", "Opaque", "", "", "Certificate, public key or trust anchor of the server."),
    r(5, "Secret Key", "", "S", "M", "Opaque", "", "", "PSK or private key of the client."),
    r(6, "SMS Security Mode", "", "S", "O", "Integer", "0..255", "", "How SMS traffic is protected."),
    r(7, "SMS Binding Key Parameters", "", "S", "O", "Opaque", "6", "", "KIc, KID, SPI and TAR for secured SMS."),
    r(8, "SMS Binding Secret Key(s)", "", "S", "O", "Opaque", "16,32,48", "", "Keys used for secured SMS."),
    r(9, "LwM2M Server SMS Number", "", "S", "O", "String", "", "", "MSISDN to reach the server over SMS."),
    r(10, "Short Server ID", "", "S", "O", "Integer", "1..65534", "", "Short id linking this instance to a Server object instance."),
    r(11, "Client Hold Off Time", "", "S", "O", "Integer", "", "s", "Wait before a client-initiated bootstrap."),
    r(12, "Bootstrap-Server Account Timeout", "", "S", "O", "Integer", "", "s", "Lifetime of the bootstrap account, 0 meaning forever."),
    r(13, "Matching Type", "", "S", "O", "Unsigned Integer", "0..3", "", "How the stored server key is compared: exact or a SHA-2 hash."),
    r(14, "SNI", "", "S", "O", "String", "", "", "Server name to send in the TLS handshake."),
    r(15, "Certificate Usage", "", "S", "O", "Unsigned Integer", "0..3", "", "Meaning of the stored server certificate, as in DANE."),
    r(16, "DTLS/TLS Ciphersuite", "", "M", "O", "Unsigned Integer", "", "", "Cipher suites the client should offer."),
    r(17, "OSCORE Security Mode", "", "S", "O", "Objlnk", "", "", "Link to the OSCORE object instance to use."),
]
obj(0, "LWM2M Security", "Credentials and addresses the client uses to reach each server.",
    "1.1", "1.1", True, True, SECURITY, urn="urn:oma:lwm2m:oma:0:1.1")

SERVER_10 = [
    r(0, "Short Server ID", "R", "S", "M", "Integer", "1..65534", "", "Short id of the server this instance describes."),
    r(1, "Lifetime", "RW", "S", "M", "Integer", "", "s", "Registration lifetime."),
    r(2, "Default Minimum Period", "RW", "S", "O", "Integer", "", "s", "pmin used when an observation sets none."),
    r(3, "Default Maximum Period", "RW", "S", "O", "Integer", "", "s", "pmax used when an observation sets none."),
    r(4, "Disable", "E", "S", "O", "", "", "", "Deregisters and keeps this server disabled for a while."),
    r(5, "Disable Timeout", "RW", "S", "O", "Integer", "", "s", "How long Disable lasts."),
    r(6, "Notification Storing When Disabled or Offline", "RW", "S", "M", "Boolean", "", "", "Whether notifications are buffered while the server is unreachable."),
    r(7, "Binding", "RW", "S", "M", "String", "", "", "Transport binding the client uses with this server."),
    r(8, "Registration Update Trigger", "E", "S", "M", "", "", "", "Makes the client send an Update now."),
]
SERVER_11_EXTRA = [
    r(9, "Bootstrap-Request Trigger", "E", "S", "O", "", "", "", "Makes the client start a bootstrap."),
    r(10, "APN Link", "RW", "S", "O", "Objlnk", "", "", "APN profile to use for this server."),
    r(11, "TLS-DTLS Alert Code", "R", "S", "O", "Unsigned Integer", "0..255", "", "Last (D)TLS alert received from this server."),
    r(12, "Last Bootstrapped", "R", "S", "O", "Time", "", "", "When this account was last written by bootstrap."),
    r(13, "Registration Priority Order", "R", "S", "O", "Unsigned Integer", "", "", "Position of this server in the registration sequence."),
    r(14, "Initial Registration Delay Timer", "RW", "S", "O", "Unsigned Integer", "", "s", "Wait after the previous server registered."),
    r(15, "Registration Failure Block", "R", "S", "O", "Boolean", "", "", "Whether a failure here stops registering to later servers."),
    r(16, "Bootstrap on Registration Failure", "R", "S", "O", "Boolean", "", "", "Whether a failed registration leads to bootstrap."),
    r(17, "Communication Retry Count", "RW", "S", "O", "Unsigned Integer", "", "", "Attempts in one communication sequence."),
    r(18, "Communication Retry Timer", "RW", "S", "O", "Unsigned Integer", "", "s", "Base of the exponential back-off between attempts."),
    r(19, "Communication Sequence Delay Timer", "RW", "S", "O", "Unsigned Integer", "", "s", "Pause between communication sequences."),
    r(20, "Communication Sequence Retry Count", "RW", "S", "O", "Unsigned Integer", "", "", "Sequences tried before registration is given up."),
    r(21, "Trigger", "RW", "S", "O", "Boolean", "", "", "Whether the client can be woken up by SMS."),
    r(22, "Preferred Transport", "RW", "S", "O", "String", "", "", "Transport the client should prefer for this server."),
    r(23, "Mute Send", "RW", "S", "O", "Boolean", "", "", "When true (or absent) the client must not use Send."),
]
SERVER_12_EXTRA = [
    r(24, "Alternate APN Links", "RW", "M", "O", "Objlnk", "", "", "Fallback APN profiles for this server."),
    r(25, "Supported Server Versions", "RW", "M", "O", "String", "", "", "Enabler versions the server supports."),
    r(26, "Default Notification Mode", "RW", "S", "O", "Integer", "0..1", "", "0 sends notifications non-confirmable, 1 confirmable."),
    r(27, "Profile ID Hash Algorithm", "RW", "S", "O", "Unsigned Integer", "0..255", "", "Hash preferred for generated profile ids."),
]
SERVER_DESC = "Settings of one LwM2M server account on the client."
obj(1, "LwM2M Server", SERVER_DESC, "1.1", "1.1", True, True, SERVER_10 + SERVER_11_EXTRA,
    urn="urn:oma:lwm2m:oma:1:1.1")
obj(1, "LwM2M Server", SERVER_DESC, "1.2", "1.2", True, True,
    SERVER_10 + SERVER_11_EXTRA + SERVER_12_EXTRA, urn="urn:oma:lwm2m:oma:1:1.2", file="1-1.2.xml")

obj(2, "LwM2M Access Control", "Which server may do what on one object instance.", "1.1", "1.0", True, False, [
    r(0, "Object ID", "R", "S", "M", "Integer", "1..65534", "", "Object of the protected instance."),
    r(1, "Object Instance ID", "R", "S", "M", "Integer", "0..65535", "", "Instance being protected."),
    r(2, "ACL", "RW", "M", "O", "Integer", "0..31", "", "Access bits per short server id (read, write, execute, delete, create)."),
    r(3, "Access Control Owner", "RW", "S", "M", "Integer", "0..65535", "", "Short id of the server that manages this entry."),
], urn="urn:oma:lwm2m:oma:2:1.1")

obj(3, "Device", "Identity, power and time of the device, plus reboot and reset.", "1.1", "1.1", False, True, [
    r(0, "Manufacturer", "R", "S", "O", "String", "", "", "Maker of the device."),
    r(1, "Model Number", "R", "S", "O", "String", "", "", "Model name given by the maker."),
    r(2, "Serial Number", "R", "S", "O", "String", "", "", "Serial number of the device."),
    r(3, "Firmware Version", "R", "S", "O", "String", "", "", "Version of the running firmware."),
    r(4, "Reboot", "E", "S", "M", "", "", "", "Restarts the device."),
    r(5, "Factory Reset", "E", "S", "O", "", "", "", "Returns the device to its factory state."),
    r(6, "Available Power Sources", "R", "M", "O", "Integer", "0..7", "", "Kinds of power supply present, one per instance."),
    r(7, "Power Source Voltage", "R", "M", "O", "Integer", "", "", "Voltage of each power source in mV."),
    r(8, "Power Source Current", "R", "M", "O", "Integer", "", "", "Current of each power source in mA."),
    r(9, "Battery Level", "R", "S", "O", "Integer", "0..100", "/100", "Charge of the internal battery in percent."),
    r(10, "Memory Free", "R", "S", "O", "Integer", "", "", "Free storage in kilobytes."),
    r(11, "Error Code", "R", "M", "M", "Integer", "0..32", "", "Active error conditions, 0 meaning none."),
    r(12, "Reset Error Code", "E", "S", "O", "", "", "", "Clears the error list and re-evaluates it."),
    r(13, "Current Time", "RW", "S", "O", "Time", "", "", "Clock of the device."),
    r(14, "UTC Offset", "RW", "S", "O", "String", "", "", "Offset from UTC in ISO 8601 form."),
    r(15, "Timezone", "RW", "S", "O", "String", "", "", "IANA time zone of the device."),
    r(16, "Supported Binding and Modes", "R", "S", "M", "String", "", "", "Transport bindings the client supports."),
    r(17, "Device Type", "R", "S", "O", "String", "", "", "Kind of device, as named by the maker."),
    r(18, "Hardware Version", "R", "S", "O", "String", "", "", "Hardware revision."),
    r(19, "Software Version", "R", "S", "O", "String", "", "", "Version of the software above the firmware."),
    r(20, "Battery Status", "R", "S", "O", "Integer", "0..6", "", "State of the internal battery (normal, charging, damaged...)."),
    r(21, "Memory Total", "R", "S", "O", "Integer", "", "", "Total storage in kilobytes."),
    r(22, "ExtDevInfo", "R", "M", "O", "Objlnk", "", "", "Links to objects describing attached or host devices."),
], urn="urn:oma:lwm2m:oma:3:1.1")

obj(4, "Connectivity Monitoring", "Current network bearer, signal and addressing of the device.", "1.3", "1.1", False, False, [
    r(0, "Network Bearer", "R", "S", "M", "Integer", "0..50", "", "Bearer in use (cellular, wireless or wired kinds)."),
    r(1, "Available Network Bearer", "R", "M", "M", "Integer", "0..50", "", "Bearers the device could use."),
    r(2, "Radio Signal Strength", "R", "S", "M", "Integer", "", "dBm", "Average received signal strength."),
    r(3, "Link Quality", "R", "S", "O", "Integer", "", "", "Bearer-specific link quality figure."),
    r(4, "IP Addresses", "R", "M", "M", "String", "", "", "Addresses of the network interface."),
    r(5, "Router IP Addresses", "R", "M", "O", "String", "", "", "Next-hop router addresses."),
    r(6, "Link Utilization", "R", "S", "O", "Integer", "0..100", "/100", "Average use of the link in percent."),
    r(7, "APN", "R", "M", "O", "String", "", "", "Access point names in use on cellular bearers."),
    r(8, "Cell ID", "R", "S", "O", "Integer", "", "", "Serving cell identity."),
    r(9, "SMNC", "R", "S", "O", "Integer", "0..999", "", "Serving mobile network code."),
    r(10, "SMCC", "R", "S", "O", "Integer", "0..999", "", "Serving mobile country code."),
    r(11, "SignalSNR", "R", "S", "O", "Integer", "", "dB", "Signal to interference plus noise ratio."),
    r(12, "LAC", "R", "S", "O", "Integer", "", "", "Location area code."),
    r(13, "Coverage Enhancement Level", "R", "S", "O", "Integer", "0..4", "", "Coverage enhancement level in the serving cell."),
], urn="urn:oma:lwm2m:oma:4:1.3")

obj(5, "Firmware Update", "Download and installation of a new firmware image.", "1.2", "1.1", False, False, [
    r(0, "Package", "W", "S", "M", "Opaque", "", "", "Firmware image pushed by the server."),
    r(1, "Package URI", "RW", "S", "M", "String", "0..255", "", "Where the device should fetch the image itself."),
    r(2, "Update", "E", "S", "M", "", "", "", "Installs the downloaded image."),
    r(3, "State", "R", "S", "M", "Integer", "0..3", "", "Idle, downloading, downloaded or updating."),
    r(5, "Update Result", "R", "S", "M", "Integer", "0..11", "", "Outcome of the last download or update."),
    r(6, "PkgName", "R", "S", "O", "String", "0..255", "", "Name of the image."),
    r(7, "PkgVersion", "R", "S", "O", "String", "0..255", "", "Version of the image."),
    r(8, "Firmware Update Protocol Support", "R", "M", "O", "Integer", "0..5", "", "Download protocols the device supports."),
    r(9, "Firmware Update Delivery Method", "R", "S", "M", "Integer", "0..2", "", "Pull, push or both."),
    r(10, "Cancel", "E", "S", "O", "", "", "", "Abandons an update not yet started."),
    r(11, "Severity", "RW", "S", "O", "Integer", "0..2", "", "Critical, mandatory or optional image."),
    r(12, "Last State Change Time", "R", "S", "O", "Time", "", "", "When State last changed."),
    r(13, "Maximum Defer Period", "RW", "S", "O", "Unsigned Integer", "", "s", "How long a user may postpone the update."),
    r(14, "Automatic Upgrade at Download", "RW", "S", "O", "Boolean", "", "", "Whether the update starts as soon as the download ends."),
], urn="urn:oma:lwm2m:oma:5:1.2")

obj(6, "Location", "Geographic position and motion of the device.", "1.0", "1.0", False, False, [
    r(0, "Latitude", "R", "S", "M", "Float", "", "lat", "Latitude in decimal degrees (WGS84)."),
    r(1, "Longitude", "R", "S", "M", "Float", "", "lon", "Longitude in decimal degrees (WGS84)."),
    r(2, "Altitude", "R", "S", "O", "Float", "", "m", "Height above sea level."),
    r(3, "Radius", "R", "S", "O", "Float", "", "m", "Uncertainty radius around the position."),
    r(4, "Velocity", "R", "S", "O", "Opaque", "", "", "Velocity encoded as in 3GPP TS 23.032."),
    r(5, "Timestamp", "R", "S", "M", "Time", "", "", "When the position was determined."),
    r(6, "Speed", "R", "S", "O", "Float", "", "m/s", "Ground speed."),
], urn="urn:oma:lwm2m:oma:6")

obj(7, "Connectivity Statistics", "Traffic counters collected over a period set by the server.", "1.0", "1.0", False, False, [
    r(0, "SMS Tx Counter", "R", "S", "O", "Integer", "", "", "SMS sent in the period."),
    r(1, "SMS Rx Counter", "R", "S", "O", "Integer", "", "", "SMS received in the period."),
    r(2, "Tx Data", "R", "S", "O", "Integer", "", "", "Kilobytes sent in the period."),
    r(3, "Rx Data", "R", "S", "O", "Integer", "", "", "Kilobytes received in the period."),
    r(4, "Max Message Size", "R", "S", "O", "Integer", "", "B", "Largest IP message in the period."),
    r(5, "Average Message Size", "R", "S", "O", "Integer", "", "B", "Mean IP message size in the period."),
    r(6, "Start", "E", "S", "M", "", "", "", "Zeroes the counters and starts collecting."),
    r(7, "Stop", "E", "S", "M", "", "", "", "Stops collecting, keeping the counters."),
    r(8, "Collection Period", "RW", "S", "O", "Integer", "", "s", "Length of a collection, 0 meaning until Stop."),
], urn="urn:oma:lwm2m:oma:7")

obj(9, "LWM2M Software Management", "Download, installation and activation of one software package.", "1.0", "1.0", True, False, [
    r(0, "PkgName", "R", "S", "M", "String", "0..255 bytes", "", "Name of the package."),
    r(1, "PkgVersion", "R", "S", "M", "String", "0..255 bytes", "", "Version of the package."),
    r(2, "Package", "W", "S", "O", "Opaque", "", "", "Package pushed by the server."),
    r(3, "Package URI", "W", "S", "O", "String", "0..255 bytes", "", "Where the device should fetch the package."),
    r(4, "Install", "E", "S", "M", "", "", "", "Installs the delivered package."),
    r(5, "Checkpoint", "R", "S", "O", "Objlnk", "", "", "Conditions that must hold before updating."),
    r(6, "Uninstall", "E", "S", "M", "", "", "", "Removes the package, or prepares it for an update."),
    r(7, "Update State", "R", "S", "M", "Integer", "0..4", "", "Initial, download started, downloaded, delivered or installed."),
    r(8, "Update Supported Objects", "RW", "S", "O", "Boolean", "", "", "Whether the client re-registers at once when its objects change."),
    r(9, "Update Result", "R", "S", "M", "Integer", "0..200", "", "Outcome of the last download or installation."),
    r(10, "Activate", "E", "S", "M", "", "", "", "Activates the installed software."),
    r(11, "Deactivate", "E", "S", "M", "", "", "", "Deactivates the installed software."),
    r(12, "Activation State", "R", "S", "M", "Boolean", "", "", "Whether the software is active."),
    r(13, "Package Settings", "RW", "S", "O", "Objlnk", "", "", "Application-specific settings object."),
    r(14, "User Name", "W", "S", "O", "String", "0..255 bytes", "", "User for fetching the package."),
    r(15, "Password", "W", "S", "O", "String", "0..255 bytes", "", "Password for fetching the package."),
    r(16, "Status Reason", "R", "S", "O", "String", "", "", "Detail about the last action on the components."),
    r(17, "Software Component Link", "R", "M", "O", "Objlnk", "", "", "Components installed from this package."),
    r(18, "Software Component tree length", "R", "S", "O", "Integer", "0..255", "", "Number of component instances of this package."),
], urn="urn:oma:lwm2m:oma:9")

obj(10, "LWM2M Cellular Connectivity", "Cellular radio settings such as power saving timers and eDRX.", "1.1", "1.1", False, False, [
    r(0, "SMSC address", "RW", "S", "O", "String", "", "", "SMS centre to use."),
    r(1, "Disable radio period", "RW", "S", "O", "Integer", "0..65535", "", "Minutes to stay detached from the network."),
    r(2, "Module activation code", "RW", "S", "O", "String", "", "", "Code needed to activate the modem."),
    r(3, "Vendor specific extensions", "R", "S", "O", "Objlnk", "", "", "Link to a vendor object."),
    r(4, "PSM Timer", "RW", "S", "O", "Integer", "", "s", "Requested periodic TAU interval (T3412 extended)."),
    r(5, "Active Timer", "RW", "S", "O", "Integer", "", "s", "Requested reachability time after going idle (T3324)."),
    r(7, "eDRX parameters for Iu mode", "RW", "S", "O", "Opaque", "0..255", "", "Requested eDRX settings for Iu mode."),
    r(8, "eDRX parameters for WB-S1 mode", "RW", "S", "O", "Opaque", "0..255", "", "Requested eDRX settings for WB-S1 mode."),
    r(9, "eDRX parameters for NB-S1 mode", "RW", "S", "O", "Opaque", "0..255", "", "Requested eDRX settings for NB-S1 mode."),
    r(10, "eDRX parameters for A/Gb mode", "RW", "S", "O", "Opaque", "0..255", "", "Requested eDRX settings for A/Gb mode."),
    r(11, "Activated Profile Names", "R", "M", "M", "Objlnk", "", "", "APN profiles with an active PDN connection."),
    r(12, "Supported Power Saving Modes", "R", "S", "O", "Unsigned Integer", "0..255", "", "Bit set of supported modes (PSM, eDRX)."),
    r(13, "Active Power Saving Modes", "RW", "S", "O", "Unsigned Integer", "0..255", "", "Bit set of the modes in use."),
    r(14, "Release Assistance Indication Usage", "RW", "S", "O", "Unsigned Integer", "0..255", "", "When the client signals that the connection can be released."),
], urn="urn:oma:lwm2m:oma:10:1.1")

obj(19, "BinaryAppDataContainer", "Opaque application data exchanged between device and server.", "1.0", "1.0", True, False, [
    r(0, "Data", "RW", "M", "M", "Opaque", "", "", "Application payloads."),
    r(1, "Data Priority", "RW", "S", "O", "Integer", "1 bytes", "", "Delivery priority of the data."),
    r(2, "Data Creation Time", "RW", "S", "O", "Time", "", "", "When the data was created."),
    r(3, "Data Description", "RW", "S", "O", "String", "32 bytes", "", "What the data is."),
    r(4, "Data Format", "RW", "S", "O", "String", "32 bytes", "", "Format of the data."),
    r(5, "App ID", "RW", "S", "O", "Integer", "2 bytes", "", "Destination application."),
], urn="urn:oma:lwm2m:oma:19")

# ---------------------------------------------------------------- IPSO objects

def ipso_obj(oid, name, desc, rows, version="1.1", file=None):
    urn = f"urn:oma:lwm2m:ext:{oid}:{version}" if version != "1.0" else f"urn:oma:lwm2m:ext:{oid}"
    obj(oid, name, desc, version, "1.0", True, False, rows, urn=urn, file=file)


ipso_obj(3200, "Digital Input", "A generic on/off input.", [
    ipso(5500, "M"), ipso(5501), ipso(5502), ipso(5503), ipso(5504), ipso(5505), ipso(5750),
    ipso(5751), ipso(5518), ipso(6050)])
ipso_obj(3201, "Digital Output", "A generic on/off output.", [
    ipso(5550, "M"), ipso(5551), ipso(5750), ipso(5518), ipso(6050)])
ipso_obj(3202, "Analog Input", "A generic analog input.", [
    ipso(5600, "M"), ipso(5601), ipso(5602), ipso(5603), ipso(5604), ipso(5750), ipso(5751),
    ipso(5605), ipso(5518), ipso(6050), ipso(6042), ipso(6049)])
ipso_obj(3203, "Analog Output", "A generic analog output.", [
    ipso(5650, "M"), ipso(5750), ipso(5603), ipso(5604), ipso(5518), ipso(6050)])
ipso_obj(3300, "Generic Sensor", "A sensor whose quantity is given by its units.", [
    ipso(5700, "M"), ipso(5701), ipso(5601), ipso(5602), ipso(5603), ipso(5604), ipso(5750),
    ipso(5751), ipso(5605), ipso(5518), ipso(6050), ipso(6042), ipso(6049)])
ipso_obj(3301, "Illuminance", "Light level sensor, typically in lux.", [
    ipso(5700, "M"), ipso(5601), ipso(5602), ipso(5603), ipso(5604), ipso(5605), ipso(5701),
    ipso(5750), ipso(5518), ipso(6050), ipso(6042), ipso(6049)])
ipso_obj(3302, "Presence", "Presence detector with optional detection delays.", [
    ipso(5500, "M"), ipso(5501), ipso(5505), ipso(5751), ipso(5903), ipso(5904), ipso(5750),
    ipso(5518), ipso(6050), ipso(6042), ipso(6049)])
ipso_obj(3303, "Temperature", "Temperature sensor, typically in degrees Celsius.", [
    ipso(5700, "M"), ipso(5601), ipso(5602), ipso(5603), ipso(5604), ipso(5701), ipso(5605),
    ipso(5750), ipso(5518), ipso(6050), ipso(6042), ipso(6049)])
ipso_obj(3304, "Humidity", "Humidity sensor, typically relative humidity in percent.", simple_sensor_11())

ipso_obj(3311, "Light Control", "Switches and dims a light source, optionally setting its colour.", [
    ipso(5850, "M"), ipso(5851), ipso(5852), ipso(5805), ipso(5820), ipso(5706), ipso(5701),
    ipso(5750)], version="1.0")
ipso_obj(3313, "Accelerometer", "Acceleration along up to three axes.", [
    ipso(5702, "M"), ipso(5703), ipso(5704), ipso(5701), ipso(5603), ipso(5604), ipso(5750),
    ipso(5518), ipso(6050), ipso(6042), ipso(6049)])
ipso_obj(3316, "Voltage", "Voltmeter reading between two points, typically in volts.",
         simple_sensor_11([ipso(5821)]))
ipso_obj(3315, "Barometer", "Air pressure sensor, typically in pascals.", simple_sensor_11())
ipso_obj(3317, "Current", "Ammeter reading, typically in amperes.", simple_sensor_11([ipso(5821)]))
ipso_obj(3323, "Pressure", "Pressure sensor, typically in pascals.", simple_sensor_11([ipso(5821)]))

# Electrical measurement and switching, version 1.0.
ipso_obj(3305, "Power Measurement", "Active and reactive power meter with energy totals and calibration.", [
    ipso(5800, "M"), ipso(5801), ipso(5802), ipso(5803), ipso(5804), ipso(5805), ipso(5806),
    ipso(5810), ipso(5811), ipso(5812), ipso(5813), ipso(5814), ipso(5815), ipso(5816),
    ipso(5820), ipso(5821), ipso(5822), ipso(5605)], version="1.0")
# The registry spells 5853 "Muti-state Output"; the name is kept as published.
ipso_obj(3306, "Actuation", "Remote on/off, dimming or multi-level output control.", [
    ipso(5850, "M"), ipso(5851), ipso(5852), ipso(5853), ipso(5750), ipso(5518), ipso(6050)],
    version="1.0")
ipso_obj(3312, "Power Control", "Switches and dims a power outlet such as a smart plug.", [
    ipso(5850, "M"), ipso(5851, range="0-100", units="%"), ipso(5852), ipso(5805), ipso(5820),
    ipso(5750)], version="1.0")
ipso_obj(3331, "Energy", "Energy used by an electrical load, typically in watt-hours.", [
    ipso(5700, "M"), ipso(5701), ipso(5822), ipso(5750)], version="1.0")

# Axes, position, time and colour, version 1.0 unless said otherwise.
ipso_obj(3314, "Magnetometer", "Magnetic field along up to three axes, with an optional heading.", [
    ipso(5702, "M"), ipso(5703), ipso(5704), ipso(5705), ipso(5701), ipso(5750), ipso(5518),
    ipso(6050), ipso(6042), ipso(6049)], version="1.0")
ipso_obj(3332, "Direction", "Heading from a compass, wind vane or similar, in degrees.", [
    ipso(5705, "M"), ipso(5601), ipso(5602), ipso(5605), ipso(5750), ipso(5518), ipso(6050),
    ipso(6042), ipso(6049)], version="1.0")
ipso_obj(3333, "Time", "A clock in Unix seconds with an optional fraction of a second.", [
    ipso(5506, "M"), ipso(5507), ipso(5750)], version="1.0")
ipso_obj(3334, "Gyrometer", "Angular rate along three axes with per-axis minimum and maximum.", [
    ipso(5702, "M"), ipso(5703), ipso(5704), ipso(5701), ipso(5508), ipso(5509), ipso(5510),
    ipso(5511), ipso(5512), ipso(5513), ipso(5605), ipso(5603), ipso(5604), ipso(5750)],
    version="1.0")
ipso_obj(3335, "Colour", "Colour sensor reading in the colour space named by its units.", [
    ipso(5706, "M"), ipso(5701), ipso(5750), ipso(5518), ipso(6050), ipso(6042), ipso(6049)],
    version="1.0")
LOCATION_DESC = "GPS position built from reusable resources, mirroring the Location object 6."
ipso_obj(3336, "Location", LOCATION_DESC, [
    ipso(5514, "M"), ipso(5515, "M"), ipso(5516), ipso(5705, range="0-360", units="degree"),
    ipso(5517), ipso(5518), ipso(5750)], version="1.0")
ipso_obj(3336, "Location", LOCATION_DESC, [
    ipso(5514, "M"), ipso(5515, "M"), ipso(5516), ipso(5705), ipso(5517), ipso(5518), ipso(5750),
    ipso(6050), ipso(6042), ipso(6049)], version="1.1", file="3336-1.1.xml")
ipso_obj(3337, "Positioner", "Actuator moved to a position between 0 and 100 percent.", [
    ipso(5536, "M"), ipso(5537), ipso(5538), ipso(5601), ipso(5602), ipso(5605), ipso(5519),
    ipso(5520), ipso(5750)], version="1.0")
ipso_obj(3345, "Multiple Axis Joystick", "Joystick or shuttle position on up to three axes, plus a button.", [
    ipso(5500), ipso(5501), ipso(5702), ipso(5703), ipso(5704), ipso(5750)], version="1.0")

# Actuators, displays and user controls, version 1.0.
ipso_obj(3338, "Buzzer", "Audible or vibrating alarm with volume and sounding time.", [
    ipso(5850, "M"), ipso(5548, desc="Loudness in percent."), ipso(5521, desc="How long the alarm sounds once switched on."),
    ipso(5525, "M"), ipso(5750)], version="1.0")
ipso_obj(3339, "Audio Clip", "Plays a stored audio clip, e.g. a floor announcement in a lift.", [
    ipso(5522, "M"), ipso(5523, desc="Plays the clip."), ipso(5548, desc="Playback volume in percent."),
    ipso(5524), ipso(5750)], version="1.0")
ipso_obj(3340, "Timer", "Industrial-style timer driven by a trigger or an on/off input.", [
    ipso(5521, "M"), ipso(5538), ipso(5525, desc="Rearm delay between the end of one cycle and the next."),
    ipso(5523, desc="Starts a timing cycle."), ipso(5850, desc="Timer input; true is on."),
    ipso(5501), ipso(5544, desc="Total time the timer input was on; writing 0 clears it."),
    ipso(5543), ipso(5534), ipso(5526), ipso(5750)], version="1.0")
ipso_obj(3341, "Addressable Text Display", "Text display written at chosen X/Y positions.", [
    ipso(5527, "M"), ipso(5528), ipso(5529), ipso(5545), ipso(5546), ipso(5530),
    ipso(5548, desc="Display brightness in percent."), ipso(5531), ipso(5750)], version="1.0")
ipso_obj(3343, "Dimmer", "State of a dimmer or level control.", [
    ipso(5548, "M", desc="Control position in percent."),
    ipso(5852, desc="Time the level has been above zero; writing 0 restarts the count."),
    ipso(5854, desc="Time the level has been at zero; writing 0 restarts the count."), ipso(5750)],
    version="1.0")
ipso_obj(3344, "Up/Down Control", "Up/down buttons or a rotary encoder, with step counters.", [
    ipso(5532, "M"), ipso(5533, "M"), ipso(5541), ipso(5542), ipso(5750)], version="1.0")
ipso_obj(3348, "Multi-state Selector", "Selector switch with a fixed number of positions.", [
    ipso(5547, "M"), ipso(5750), ipso(5518), ipso(6050)], version="1.0")
ipso_obj(3349, "Bitmap", "Several digital inputs packed into one integer, one bit each.", [
    ipso(5910, "M"), ipso(5911), ipso(5912, multiple="M"), ipso(5750)], version="1.0")
ipso_obj(3350, "Stopwatch", "Counts up the time elapsed since it was started.", [
    ipso(5544, "M", desc="Time counted so far; writing 0 clears it."), ipso(5850, desc="Runs the stopwatch while true."),
    ipso(5501, desc="Times the stopwatch was started."), ipso(5750), ipso(5518), ipso(6050),
    ipso(6042), ipso(6049)], version="1.0")

# Single-value sensors of version 1.0 (simple_sensor_10 layout).
ipso_obj(3318, "Frequency", "Frequency sensor, typically in hertz.", simple_sensor_10(), version="1.0")
ipso_obj(3319, "Depth", "Depth sensor, e.g. a rain gauge reporting millimetres.", simple_sensor_10(),
         version="1.0")
ipso_obj(3320, "Percentage", "A reading on a 0 to 100 percent scale, such as a tank fill level.",
         simple_sensor_10(), version="1.0")
ipso_obj(3321, "Altitude", "Height above sea level, typically in metres.", simple_sensor_10(),
         version="1.0")
ipso_obj(3322, "Load", "Weight or force on a load cell, typically in kilograms.", simple_sensor_10(),
         version="1.0")
ipso_obj(3324, "Loudness", "Sound or noise level, typically in decibels.", simple_sensor_10(),
         version="1.0")
ipso_obj(3325, "Concentration", "Amount of a substance in a medium, typically in ppm.",
         simple_sensor_10(), version="1.0")
ipso_obj(3326, "Acidity", "Acidity of a liquid, typically in pH.", simple_sensor_10(), version="1.0")
ipso_obj(3327, "Conductivity", "Electrical conductivity of a sample, typically in siemens.",
         simple_sensor_10(), version="1.0")
ipso_obj(3328, "Power", "Real or apparent electrical power, typically in watts.", simple_sensor_10(),
         version="1.0")
ipso_obj(3329, "Power Factor", "Power factor of an electrical load, measured or computed.",
         simple_sensor_10(), version="1.0")
ipso_obj(3330, "Distance", "Distance sensor, typically in metres.", simple_sensor_10(), version="1.0")
ipso_obj(3346, "Rate", "A speed or rate, such as a vehicle speed or a shaft's rotation rate.",
         simple_sensor_10(), version="1.0")
ipso_obj(3347, "Push button", "State of a momentary push button and how often it was pressed.", [
    ipso(5500, "M"), ipso(5501), ipso(5750), ipso(5518), ipso(6050)])
ipso_obj(3342, "On/Off switch", "Reports the position of an on/off switch.", [
    ipso(5500, "M"), ipso(5501), ipso(5852), ipso(5854), ipso(5750), ipso(5518), ipso(6050)])


def write(o):
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             '<!-- Generated by xml/tools/gen.py; descriptions written for this project. -->',
             '<LWM2M xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
             'xsi:noNamespaceSchemaLocation="http://openmobilealliance.org/tech/profiles/LWM2M.xsd">',
             '  <Object ObjectType="MODefinition">',
             f'    <Name>{escape(o["name"])}</Name>',
             f'    <Description1>{escape(o["desc"])}</Description1>',
             f'    <ObjectID>{o["id"]}</ObjectID>']
    if o["urn"]:
        lines.append(f'    <ObjectURN>{escape(o["urn"])}</ObjectURN>')
    lines += [f'    <LWM2MVersion>{o["lwm2m"]}</LWM2MVersion>',
              f'    <ObjectVersion>{o["version"]}</ObjectVersion>',
              f'    <MultipleInstances>{"Multiple" if o["multiple"] else "Single"}</MultipleInstances>',
              f'    <Mandatory>{"Mandatory" if o["mandatory"] else "Optional"}</Mandatory>',
              '    <Resources>']
    seen = set()
    for (rid, name, ops, mult, mand, typ, rng, units, desc) in o["rows"]:
        assert rid not in seen, (o["id"], rid)
        seen.add(rid)
        assert ops in ("", "R", "W", "RW", "E"), (o["id"], rid, ops)
        assert (typ == "") == (ops == "E"), (o["id"], rid)
        lines += [f'      <Item ID="{rid}">',
                  f'        <Name>{escape(name)}</Name>',
                  f'        <Operations>{ops}</Operations>',
                  f'        <MultipleInstances>{"Multiple" if mult == "M" else "Single"}</MultipleInstances>',
                  f'        <Mandatory>{"Mandatory" if mand == "M" else "Optional"}</Mandatory>',
                  f'        <Type>{typ}</Type>',
                  f'        <RangeEnumeration>{escape(rng)}</RangeEnumeration>',
                  f'        <Units>{escape(units)}</Units>',
                  f'        <Description>{escape(desc)}</Description>',
                  '      </Item>']
    lines += ['    </Resources>', '    <Description2></Description2>', '  </Object>', '</LWM2M>', '']
    path = os.path.join(OUT, o["file"] or f'{o["id"]}.xml')
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    for o in OBJECTS:
        write(o)
    print(f"wrote {len(OBJECTS)} definitions")
