"""``CapturedPacket``: one captured frame with where and when it was seen, and its
layers decoded on first use by the shared decoder stack (``sockscope.packets``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from sockscope.capture import tpacket
from sockscope.packets import sll
from sockscope.packets.fields import Header
from sockscope.packets.packet import Packet

if TYPE_CHECKING:
    from sockscope.capture.engine import Capture, CaptureInterface
    from sockscope.inventory.model import Owner

H = TypeVar("H", bound=Header)

# sll_pkttype -> the direction word of the API and JSON
DIRECTION_NAMES = {
    sll.PACKET_HOST: "in",
    sll.PACKET_BROADCAST: "broadcast",
    sll.PACKET_MULTICAST: "multicast",
    sll.PACKET_OTHERHOST: "otherhost",
    sll.PACKET_OUTGOING: "out",
}


class CapturedPacket:
    """``timestamp_ns`` (kernel receive time), ``data`` (the captured bytes, cut to the
    snapshot length), ``wirelen`` (length on the wire), ``interface`` (name),
    ``interface_id`` (index among the capture's interfaces, as in a pcapng file),
    ``direction`` ("in", "out", "broadcast", "multicast", "otherhost"; None when a
    file did not record it) and ``linktype``."""

    __slots__ = (
        "_packet",
        "data",
        "direction",
        "interface",
        "interface_id",
        "linktype",
        "owners",
        "timestamp_ns",
        "wirelen",
    )

    def __init__(
        self,
        timestamp_ns: int,
        data: bytes,
        wirelen: int,
        linktype: int,
        interface: str,
        interface_id: int = 0,
        direction: str | None = None,
    ) -> None:
        self.timestamp_ns = timestamp_ns
        self.data = data
        self.wirelen = wirelen
        self.linktype = linktype
        self.interface = interface
        self.interface_id = interface_id
        self.direction = direction
        # The processes at the local end (capture --owners); None: not looked up.
        self.owners: tuple[Owner, ...] | None = None
        self._packet: Packet | None = None

    @classmethod
    def from_frame(
        cls, frame: tpacket.Frame, iface: CaptureInterface, iid: int, capture: Capture
    ) -> CapturedPacket:
        name = capture.ifname(frame.ifindex) if iface.index == 0 else iface.name
        return cls(
            frame.sec * 1_000_000_000 + frame.nsec,
            frame.data,
            frame.wirelen,
            iface.linktype,
            name,
            iid,
            DIRECTION_NAMES.get(frame.pkttype, "in"),
        )

    @property
    def packet(self) -> Packet:
        """The decoded view (built on first use)."""
        if self._packet is None:
            self._packet = Packet(self.data, self.linktype, self.wirelen)
        return self._packet

    @property
    def layers(self) -> list[Header]:
        return self.packet.layers

    @property
    def malformed(self) -> str | None:
        return self.packet.malformed

    def get(self, cls: type[H]) -> H | None:
        return self.packet.get(cls)

    def __getitem__(self, cls: type[H]) -> H:
        return self.packet[cls]

    def __contains__(self, cls: type[Header]) -> bool:
        return self.packet.get(cls) is not None

    def summary(self) -> str:
        return self.packet.summary()

    def to_dict(self, verbose: bool = False) -> dict[str, Any]:
        """The JSON form: where and when, lengths, the summary, and with ``verbose``
        every decoded field of every layer."""
        from sockscope.packets.jsonify import layer_dict

        out: dict[str, Any] = {
            "timestamp": self.timestamp_ns / 1e9,
            "timestamp_ns": self.timestamp_ns,
            "interface": self.interface,
            "direction": self.direction,
            "length": self.wirelen,
            "captured": len(self.data),
            "summary": self.summary(),
            "layers": [layer.name for layer in self.layers],
        }
        pkt = self.packet
        if self.owners is not None:
            out["owners"] = [o.to_dict() for o in self.owners]
        out["malformed"] = pkt.malformed
        out["truncated"] = pkt.truncated
        if verbose:
            out["layers"] = [layer_dict(layer) for layer in self.layers]
        return out

    def __repr__(self) -> str:
        return f"<CapturedPacket {self.interface} {self.direction} {len(self.data)}/{self.wirelen} bytes>"
