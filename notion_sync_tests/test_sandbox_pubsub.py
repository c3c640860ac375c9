"""The sandbox's Pub/Sub API (Change Data Capture), through our client and the raw gRPC stub."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests

from notion_sync.salesforce.pubsub import (
    EARLIEST,
    LATEST,
    CdcUnavailable,
    PubSubAuth,
    PubSubClient,
    ReplayExpired,
    Start,
)
from notion_sync.salesforce.pubsub import pubsub_api_pb2 as pb
from notion_sync.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.sandbox.sf_data import make_id, parse_datetime

ACCOUNTS = "/data/AccountChangeEvent"
REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "notion_sync" / "salesforce" / "pubsub"


@pytest.fixture
def sandbox(tmp_path):
    with SalesforceSandbox(records=20, workdir=tmp_path / "sf") as sandbox:
        yield sandbox


def live_id(sandbox: SalesforceSandbox, obj: str, k: int) -> str:
    """The k-th record of `obj` that is not in the Recycle Bin."""
    prefix = sandbox.data.sobjects[obj].key_prefix
    ids = (make_id(prefix, i) for i in range(sandbox.data.counts[obj]))
    return [i for i in ids if not sandbox.get(obj, i)["IsDeleted"]][k]


def client(sandbox: SalesforceSandbox, token: str | None = None) -> PubSubClient:
    auth = PubSubAuth(token or sandbox.session_id, sandbox.url, sandbox.org_id)
    return PubSubClient(sandbox.pubsub_endpoint, auth, str(sandbox.ca_file))


def listen(sandbox: SalesforceSandbox, start: Start, wait_s: float = 2.0, **kwargs):
    with client(sandbox) as pubsub:
        return pubsub.listen({ACCOUNTS: start}, wait_s=wait_s, **kwargs)[ACCOUNTS]


def raw_subscribe(sandbox: SalesforceSandbox, requests_: list[pb.FetchRequest], events: int = 0):
    """Responses of a raw Subscribe call until `events` events came (0: the first response)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=sandbox.ca_file.read_bytes())
    with grpc.secure_channel(sandbox.pubsub_endpoint, credentials) as channel:
        metadata = PubSubAuth(sandbox.session_id, sandbox.url, sandbox.org_id).metadata()
        call = pb_grpc.PubSubStub(channel).Subscribe(iter(requests_), metadata=metadata, timeout=5)
        responses = []
        for response in call:
            responses.append(response)
            if sum(len(r.events) for r in responses) >= events:
                break
        call.cancel()
        return responses


def test_every_admin_change_is_an_event_with_the_real_header(sandbox):
    record_id = live_id(sandbox, "Account", 3)
    new_id = sandbox.create("Account", {"Name": "Created in Salesforce", "BillingCity": "Zürich"})
    sandbox.update("Account", record_id, {"Phone": "+1 555 0100", "Website": None, "BillingCity": "Bern"})
    sandbox.delete("Account", record_id)
    sandbox.undelete("Account", record_id)
    sandbox.update("Contact", live_id(sandbox, "Contact", 1), {"Title": "CTO"})  # another channel
    sandbox.update(
        "Opportunity", live_id(sandbox, "Opportunity", 1), {"NextStep": "x"}
    )  # not selected for CDC
    result = listen(sandbox, EARLIEST)
    events = result.events
    assert [e.change_type for e in events] == ["CREATE", "UPDATE", "DELETE", "UNDELETE"]
    assert [e.record_ids for e in events] == [(new_id,), (record_id,), (record_id,), (record_id,)]
    assert all(e.entity == "Account" and e.transaction_key for e in events)
    replays = [int.from_bytes(e.replay_id, "big") for e in events]
    assert replays == sorted(set(replays))
    created, updated = events[0], events[1]
    assert created.values["Name"] == "Created in Salesforce"
    assert created.values["BillingAddress"]["City"] == "Zürich"
    assert set(updated.changed_fields) == {
        "Phone",
        "Website",
        "BillingAddress",
        "BillingAddress.City",
        "LastModifiedDate",
    }
    assert updated.values["Phone"] == "+1 555 0100" and "Website" not in updated.values
    undeleted = sandbox.get("Account", record_id)
    assert not undeleted["IsDeleted"]
    assert events[-1].values["LastModifiedDate"] == parse_datetime(undeleted["LastModifiedDate"])
    assert listen(sandbox, Start.after(events[1].replay_id)).events == events[2:]
    assert listen(sandbox, LATEST, wait_s=0.3).events == []
    with client(sandbox) as pubsub:
        topic = pubsub.get_topic(ACCOUNTS)
    assert topic.can_subscribe and topic.schema_id and topic.tenant_guid == sandbox.org_id


def test_flow_control_never_sends_more_than_requested(sandbox):
    for n in range(130):
        sandbox.update("Account", live_id(sandbox, "Account", 4), {"Phone": f"+1 555 {n:04d}"})
    first = pb.FetchRequest(topic_name=ACCOUNTS, replay_preset=pb.EARLIEST, num_requested=7)
    (response,) = raw_subscribe(sandbox, [first], 7)
    assert len(response.events) == 7 and response.pending_num_requested == 0
    more = [first, pb.FetchRequest(num_requested=100), pb.FetchRequest(num_requested=100)]
    responses = raw_subscribe(sandbox, more, 130)  # 207 asked for: all 130 retained, none twice
    assert all(len(r.events) <= 100 for r in responses) and responses[-1].pending_num_requested == 77
    replays = [e.replay_id for r in responses for e in r.events]
    assert len(replays) == len(set(replays)) == 130
    assert len(listen(sandbox, EARLIEST, max_events=50).events) == 50  # our client asks 100 at a time
    assert len(listen(sandbox, EARLIEST).events) == 130
    too_many = pb.FetchRequest(topic_name=ACCOUNTS, replay_preset=pb.EARLIEST, num_requested=101)
    with pytest.raises(grpc.RpcError) as refused:
        raw_subscribe(sandbox, [too_many])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_keepalive_carries_the_latest_replay_id(sandbox):
    sandbox.bus.keepalive_seconds = 0.2
    sandbox.update("Account", live_id(sandbox, "Account", 5), {"Phone": "+1 555 0101"})
    (event,) = listen(sandbox, EARLIEST).events
    start = pb.FetchRequest(topic_name=ACCOUNTS, replay_preset=pb.LATEST, num_requested=10)
    (keepalive,) = raw_subscribe(sandbox, [start])
    assert not keepalive.events and keepalive.latest_replay_id == event.replay_id


def test_wrong_session_headers_are_refused(sandbox):
    with client(sandbox, token="00DDn0000000001!wrong") as pubsub, pytest.raises(Exception) as refused:
        pubsub.get_topic(ACCOUNTS)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.error_code == "sfdc.platform.eventbus.grpc.service.auth.error"


def test_events_are_kept_72_hours_of_the_orgs_clock(sandbox):
    sandbox.update("Account", live_id(sandbox, "Account", 6), {"Phone": "+1 555 0102"})
    (old,) = listen(sandbox, EARLIEST).events
    sandbox.advance_clock(71 * 3600)
    assert listen(sandbox, Start.after(old.replay_id)).error is None
    sandbox.advance_clock(2 * 3600)  # 73 h after the event
    sandbox.update("Account", live_id(sandbox, "Account", 7), {"Phone": "+1 555 0103"})
    expired = listen(sandbox, Start.after(old.replay_id))
    assert isinstance(expired.error, ReplayExpired) and expired.events == []
    assert "replayid.corrupted" in str(expired.error)
    assert [e.record_ids for e in listen(sandbox, EARLIEST).events] == [(live_id(sandbox, "Account", 7),)]


def test_the_delivery_allocation_ends_the_stream_once_spent(sandbox):
    for n in range(5):
        sandbox.update("Account", live_id(sandbox, "Account", 8), {"Phone": f"+1 555 01{n:02d}"})
    requests.post(f"{sandbox.url}/_sandbox/cdc", json={"allocation": 3}, verify=sandbox.ca_file, timeout=10)
    spent = listen(sandbox, EARLIEST)
    assert len(spent.events) == 3
    assert isinstance(spent.error, CdcUnavailable)
    assert spent.error.error_code == "sfdc.platform.eventbus.grpc.subscription.limit.exceeded"
    assert "exceeded the event delivery limit" in str(spent.error)
    sandbox.set_delivery_allocation(None)
    assert len(listen(sandbox, Start.after(spent.events[-1].replay_id)).events) == 2


def test_objects_not_selected_for_cdc_answer_not_found(sandbox):
    with client(sandbox) as pubsub:
        results = pubsub.listen({"/data/OpportunityChangeEvent": LATEST}, wait_s=2.0)
        with pytest.raises(CdcUnavailable):
            pubsub.get_topic("/data/OpportunityChangeEvent")
    assert isinstance(results["/data/OpportunityChangeEvent"].error, CdcUnavailable)
    sandbox.select_for_cdc(["Account", "Opportunity"])
    sandbox.update("Opportunity", live_id(sandbox, "Opportunity", 2), {"NextStep": "Call"})
    with client(sandbox) as pubsub:
        events = pubsub.listen({"/data/OpportunityChangeEvent": EARLIEST}, wait_s=2.0)
    assert [e.entity for e in events["/data/OpportunityChangeEvent"].events] == ["Opportunity"]


def test_gap_and_overflow_events_on_demand(sandbox):
    ids = [live_id(sandbox, "Account", 9), live_id(sandbox, "Account", 10)]
    http = {"verify": sandbox.ca_file, "timeout": 10}
    requests.post(f"{sandbox.url}/_sandbox/cdc/gap", json={"object": "Account", "ids": ids}, **http)
    requests.post(f"{sandbox.url}/_sandbox/cdc/overflow", json={"object": "Account"}, **http)
    gap, overflow = listen(sandbox, EARLIEST).events
    assert gap.change_type == "GAP_UPDATE" and gap.record_ids == tuple(ids) and gap.is_gap
    assert gap.values == {} and gap.changed_fields == ()
    assert overflow.change_type == "GAP_OVERFLOW" and overflow.record_ids == () and overflow.is_gap


def test_pubsub_generated_modules_match_the_proto(tmp_path):
    """The committed *_pb2*.py are what `make proto` generates from pubsub_api.proto."""
    pytest.importorskip("grpc_tools")
    target = tmp_path / "notion_sync" / "salesforce" / "pubsub"
    target.mkdir(parents=True)
    shutil.copy(PROTO_DIR / "pubsub_api.proto", target)
    proto = "notion_sync/salesforce/pubsub/pubsub_api.proto"
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--pyi_out=."]
    subprocess.run([*command, "--grpc_python_out=.", proto], cwd=tmp_path, check=True)
    for name in ("pubsub_api_pb2.py", "pubsub_api_pb2.pyi", "pubsub_api_pb2_grpc.py"):
        assert filecmp.cmp(target / name, PROTO_DIR / name, shallow=False), f"{name} is stale: run make proto"


def test_starts_use_the_protos_replay_presets():
    assert (LATEST.preset, EARLIEST.preset, Start.after(b"x").preset) == (pb.LATEST, pb.EARLIEST, pb.CUSTOM)
