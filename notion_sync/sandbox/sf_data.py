"""Seeded, lazy Salesforce data for the sandbox: schema, describe, records, queries, admin edits.

Volume: ``records`` is the number of Accounts; there are ``2 * records`` Contacts and ``records``
Opportunities. Nothing is stored per record: record ``i`` of an object is computed from
``(seed, object, i)`` whenever it is read, so 1,000,000 Accounts cost no memory. Only admin
changes (updates, deletes, creates) live in a dict of overrides.

Timestamps: ``SystemModstamp`` is a non-decreasing function of the index (spread evenly over the
``days`` before ``end``, whole seconds), and Ids increase with the index, so the index order is the
``(SystemModstamp, Id)`` order and a window query finds its index range by bisection. A record
whose SystemModstamp an admin edit moved (to "now") is read from the overrides instead.

Edge stamps: for every UTC midnight M inside the span, the last record before M gets
``SystemModstamp = M - 1 ms`` (23:59:59.999) and the next one gets exactly M (00:00:00.000), as long
as both fall on the neighbouring days. :meth:`SalesforceData.edge_records` lists them.

Other deterministic features: ~2% of records are soft-deleted (``IsDeleted``; ``queryAll`` only),
Account 0 is named "Müller & Søn" and Account 1 "東京 Trading", about 10% of Descriptions are longer
than 2,000 characters, and with ``invalid_emails`` (default on) every Contact whose index is 13
modulo 97 has an invalid Email (:meth:`SalesforceData.invalid_email_ids`).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from notion_sync.salesforce.ids import case_safe_id
from notion_sync.sandbox.soql import Comparison, Query, compile_all

DEFAULT_END = datetime(2026, 11, 21, tzinfo=UTC)
DAY_MS = 86_400_000
CHEAP_FIELDS = frozenset({"Id", "IsDeleted", "SystemModstamp", "LastModifiedDate", "CreatedDate"})
_MASK = (1 << 64) - 1
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class DataError(Exception):
    """An admin change Salesforce would refuse (errorCode as Salesforce names it)."""

    def __init__(self, error_code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------------------------- schema


def _values(text: str) -> tuple[str, ...]:
    """Picklist values and name pools, written as "a|b|c" to keep them compact."""
    return tuple(text.split("|"))


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # Salesforce describe type
    label: str
    length: int = 0
    precision: int = 0
    scale: int = 0
    picklist: tuple[str, ...] = ()
    reference_to: tuple[str, ...] = ()
    nillable: bool = True
    custom: bool = False
    compound: str | None = None  # compoundFieldName of a component
    formula: str | None = None  # calculatedFormula: a read-only formula field
    system: bool = False  # set by Salesforce, not updateable

    @property
    def filterable(self) -> bool:
        return self.type != "address" and not (self.type == "textarea" and self.length > 255)

    @property
    def sortable(self) -> bool:
        return self.filterable and self.type != "multipicklist"

    @property
    def updateable(self) -> bool:
        return not (self.system or self.formula or self.type == "address")


@dataclass(frozen=True)
class SObject:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    code: int  # mixes into the per-record seed
    fields: tuple[Field, ...]

    def field_map(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    @property
    def stamp_field(self) -> str:
        """The datetime its records are ordered by: SystemModstamp, or CreatedDate on a history
        object (whose rows are never edited and have no SystemModstamp)."""
        names = {f.name for f in self.fields}
        return "SystemModstamp" if "SystemModstamp" in names else "CreatedDate"

    @property
    def writable(self) -> bool:
        """History objects are written by Salesforce only."""
        return self.stamp_field == "SystemModstamp"


def _system_fields() -> tuple[Field, ...]:
    return (
        Field("CreatedDate", "datetime", "Created Date", nillable=False, system=True),
        Field("LastModifiedDate", "datetime", "Last Modified Date", nillable=False, system=True),
        Field("SystemModstamp", "datetime", "System Modstamp", nillable=False, system=True),
    )


def _id_fields() -> tuple[Field, ...]:
    return (
        Field("Id", "id", "Record ID", length=18, nillable=False, system=True),
        Field("IsDeleted", "boolean", "Deleted", nillable=False, system=True),
    )


ACCOUNT_TYPES = _values(
    "Prospect|Customer - Direct|Customer - Channel|Channel Partner / Reseller|"
    "Installation Partner|Technology Partner|Other"
)
INDUSTRIES = _values(
    "Agriculture|Apparel|Banking|Biotechnology|Chemicals|Communications|Construction|"
    "Consulting|Education|Electronics|Energy|Engineering|Entertainment|Finance|Healthcare|"
    "Hospitality|Insurance|Manufacturing|Media|Retail|Technology|Telecommunications|"
    "Transportation|Utilities"
)
REGIONS = ("AMER", "EMEA", "APAC", "LATAM", "ANZ")
STAGES = {  # StageName → default Probability
    "Prospecting": 10,
    "Qualification": 10,
    "Needs Analysis": 20,
    "Value Proposition": 50,
    "Id. Decision Makers": 60,
    "Perception Analysis": 70,
    "Proposal/Price Quote": 75,
    "Negotiation/Review": 90,
    "Closed Won": 100,
    "Closed Lost": 0,
}
OPPORTUNITY_TYPES = _values(
    "Existing Customer - Upgrade|Existing Customer - Replacement|Existing Customer - Downgrade|New Customer"
)
HISTORY_FIELDS = ("Phone", "Type", "Industry", "Website")
PRODUCTS = ("Platform", "Analytics", "Support Plus", "Training", "Integrations", "Mobile")


LONG_TEXT_LENGTH = 131_072  # a Long Text Area holds at most 131,072 characters


def _account(custom_fields: int, long_text_fields: int = 0) -> SObject:
    billing = [
        Field("BillingStreet", "textarea", "Billing Street", length=255, compound="BillingAddress"),
        Field("BillingCity", "string", "Billing City", length=40, compound="BillingAddress"),
        Field("BillingState", "string", "Billing State/Province", length=80, compound="BillingAddress"),
        Field("BillingPostalCode", "string", "Billing Zip/Postal Code", length=20, compound="BillingAddress"),
        Field("BillingCountry", "string", "Billing Country", length=80, compound="BillingAddress"),
        Field(
            "BillingLatitude", "double", "Billing Latitude", precision=18, scale=15, compound="BillingAddress"
        ),
        Field(
            "BillingLongitude",
            "double",
            "Billing Longitude",
            precision=18,
            scale=15,
            compound="BillingAddress",
        ),
        Field(
            "BillingGeocodeAccuracy",
            "picklist",
            "Billing Geocode Accuracy",
            length=40,
            picklist=("Address", "NearAddress", "Block", "Street", "ExtendedZip", "Zip", "City"),
            compound="BillingAddress",
        ),
        Field("BillingAddress", "address", "Billing Address"),
    ]
    customs = [
        Field(f"Custom_Text_{k:02d}__c", "string", f"Custom Text {k:02d}", length=255, custom=True)
        for k in range(1, custom_fields + 1)
    ]
    long_texts = [
        Field(
            f"Long_Notes_{k:02d}__c", "textarea", f"Long Notes {k:02d}", length=LONG_TEXT_LENGTH, custom=True
        )
        for k in range(1, long_text_fields + 1)
    ]
    return SObject(
        "Account",
        "Account",
        "Accounts",
        "001",
        1,
        (
            *_id_fields(),
            Field("Name", "string", "Account Name", length=255, nillable=False),
            Field("Type", "picklist", "Account Type", length=255, picklist=ACCOUNT_TYPES),
            Field("Industry", "picklist", "Industry", length=255, picklist=INDUSTRIES),
            *billing,
            Field("Phone", "phone", "Account Phone", length=40),
            Field("Website", "url", "Website", length=255),
            Field("AnnualRevenue", "currency", "Annual Revenue", precision=18, scale=0),
            Field("NumberOfEmployees", "int", "Employees", precision=8),
            Field("Description", "textarea", "Account Description", length=32000),
            *_system_fields(),
            Field("Active__c", "boolean", "Active", nillable=False, custom=True),
            Field("Regions__c", "multipicklist", "Regions", length=4099, picklist=REGIONS, custom=True),
            Field("Rating_Score__c", "percent", "Rating Score", precision=5, scale=2, custom=True),
            Field(
                "Revenue_Per_Employee__c",
                "currency",
                "Revenue per Employee",
                precision=18,
                scale=2,
                custom=True,
                formula="AnnualRevenue / NumberOfEmployees",
            ),
            *customs,
            *long_texts,
        ),
    )


CONTACT = SObject(
    "Contact",
    "Contact",
    "Contacts",
    "003",
    2,
    (
        *_id_fields(),
        Field("AccountId", "reference", "Account ID", length=18, reference_to=("Account",)),
        Field("LastName", "string", "Last Name", length=80, nillable=False, compound="Name"),
        Field("FirstName", "string", "First Name", length=40, compound="Name"),
        Field("Name", "string", "Full Name", length=121, nillable=False, system=True),
        Field("Phone", "phone", "Business Phone", length=40),
        Field("Email", "email", "Email", length=80),
        Field("Title", "string", "Title", length=128),
        Field("Birthdate", "date", "Birthdate"),
        Field("HasOptedOutOfEmail", "boolean", "Email Opt Out", nillable=False),
        Field("Description", "textarea", "Contact Description", length=32000),
        Field(
            "Account_Name__c",
            "string",
            "Account Name",
            length=1300,
            custom=True,
            formula="Account.Name",  # cross-object: changes with the Account, not the Contact's modstamp
        ),
        *_system_fields(),
    ),
)

OPPORTUNITY = SObject(
    "Opportunity",
    "Opportunity",
    "Opportunities",
    "006",
    3,
    (
        *_id_fields(),
        Field("AccountId", "reference", "Account ID", length=18, reference_to=("Account",)),
        Field("Name", "string", "Name", length=120, nillable=False),
        Field("Description", "textarea", "Description", length=32000),
        Field("StageName", "picklist", "Stage", length=255, nillable=False, picklist=tuple(STAGES)),
        Field("Amount", "currency", "Amount", precision=18, scale=2),
        Field("Probability", "percent", "Probability (%)", precision=3, scale=0),
        Field("CloseDate", "date", "Close Date", nillable=False),
        Field("Type", "picklist", "Opportunity Type", length=255, picklist=OPPORTUNITY_TYPES),
        Field("NextStep", "string", "Next Step", length=255),
        Field("IsClosed", "boolean", "Closed", nillable=False, system=True),
        Field("IsWon", "boolean", "Won", nillable=False, system=True),
        Field("Products__c", "multipicklist", "Products", length=4099, picklist=PRODUCTS, custom=True),
        *_system_fields(),
    ),
)

# A field history object: one row per tracked change, with CreatedDate and no SystemModstamp or
# LastModifiedDate (replicated by CreatedDate).
ACCOUNT_HISTORY = SObject(
    "AccountHistory",
    "Account History",
    "Account History",
    "017",
    6,
    (
        *_id_fields(),
        Field("AccountId", "reference", "Account ID", length=18, reference_to=("Account",), system=True),
        Field("CreatedById", "reference", "Created By ID", length=18, reference_to=("User",), system=True),
        Field("CreatedDate", "datetime", "Created Date", nillable=False, system=True),
        Field("Field", "picklist", "Changed Field", length=255, picklist=HISTORY_FIELDS, system=True),
        Field("OldValue", "anyType", "Old Value", system=True),
        Field("NewValue", "anyType", "New Value", system=True),
    ),
)

# Two more standard objects, small, served only when asked for (``extra_objects``): enough objects
# for a Composite API call of five queries.
LEAD_STATUSES = _values("Open - Not Contacted|Working - Contacted|Closed - Converted|Closed - Not Converted")
CASE_STATUSES = _values("New|Working|Escalated|Closed")
LEAD = SObject(
    "Lead",
    "Lead",
    "Leads",
    "00Q",
    4,
    (
        *_id_fields(),
        Field("LastName", "string", "Last Name", length=80, nillable=False),
        Field("Company", "string", "Company", length=255, nillable=False),
        Field("Status", "picklist", "Lead Status", length=255, nillable=False, picklist=LEAD_STATUSES),
        Field("Email", "email", "Email", length=80),
        *_system_fields(),
    ),
)
CASE = SObject(
    "Case",
    "Case",
    "Cases",
    "500",
    5,
    (
        *_id_fields(),
        Field("AccountId", "reference", "Account ID", length=18, reference_to=("Account",)),
        Field("Subject", "string", "Subject", length=255),
        Field("Status", "picklist", "Status", length=255, picklist=CASE_STATUSES),
        *_system_fields(),
    ),
)
EXTRA_OBJECTS = {"Lead": LEAD, "Case": CASE}

REQUIRED_ON_CREATE = {
    "Account": ("Name",),
    "Contact": ("LastName",),
    "Opportunity": ("Name", "StageName", "CloseDate"),
    "Lead": ("LastName", "Company", "Status"),
    "Case": (),
}
_PER_ACCOUNT = {"Account": 1, "Contact": 2, "Opportunity": 1, "AccountHistory": 1, "Lead": 1, "Case": 1}


# ----------------------------------------------------------------------------------- ids and datetimes


def _mix(*parts: int) -> int:
    """A 64-bit hash of integers for per-record seeds and coin flips. CPython hashes a tuple of ints
    with xxHash mixing, in C, and (unlike str hashes) identically in every process."""
    return hash(parts) & _MASK


def make_id(key_prefix: str, index: int) -> str:
    """prefix + pod "Dn" + reserved "0" + 9 base-62 digits of ``index`` + checksum.

    Fixed width and an ASCII-ordered alphabet make Ids sort like their indexes."""
    high, low = divmod(index, 62**5)
    return case_safe_id(f"{key_prefix}Dn0{_base62(high, 4)}{_base62(low, 5)}")


@functools.lru_cache(maxsize=65_536)
def _base62(number: int, width: int) -> str:
    digits = ""
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits = _B62[rem] + digits
    return digits


def parse_id(key_prefix: str, record_id: str) -> int | None:
    """The index behind an Id of this object (15 or 18 characters), or None."""
    if len(record_id) not in (15, 18) or not record_id.startswith(key_prefix + "Dn0"):
        return None
    if len(record_id) == 18 and case_safe_id(record_id[:15]) != record_id:
        return None
    index = 0
    for ch in record_id[6:15]:
        pos = _B62.find(ch)
        if pos < 0:
            return None
        index = index * 62 + pos
    return index


def format_datetime(ms: int) -> str:
    """Epoch milliseconds → Salesforce's ``2026-11-20T13:45:00.000+0000``."""
    day, rest = divmod(ms, DAY_MS)
    seconds, milli = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_date(day)}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}+0000"


@functools.lru_cache(maxsize=4_096)
def _date(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


def parse_datetime(value: str) -> int:
    """Salesforce / ISO datetime → epoch milliseconds."""
    text = value.replace("Z", "+00:00")
    if text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# --------------------------------------------------------------------------------------- value pools

_COMPANY_A = _values(
    "Acme|Globex|Initech|Umbrella|Stark|Wayne|Nordwind|Zürich|Ørsted|São Paulo|Kraków|"
    "Café Émile|Ελληνική|北京|Sakura|Łódź|Åland|Dvořák"
)
_COMPANY_B = _values(
    "Analytics|Logistics|Holdings|Software|Foods|Energy|Labs|Partners|Trading|Robotics|Consulting|Textiles"
)
_COMPANY_SUFFIX = ("", "", " Inc.", " GmbH", " Ltd", " KK", " S.A.", " AG", " & Co.")
_CITIES = (  # city, state, postal code, country, latitude, longitude
    ("München", "Bayern", "80331", "Germany", 48.137154, 11.576124),
    ("Zürich", "ZH", "8001", "Switzerland", 47.376887, 8.541694),
    ("東京", "東京都", "100-0001", "Japan", 35.689487, 139.691706),
    ("São Paulo", "SP", "01000-000", "Brazil", -23.55052, -46.633308),
    ("Montréal", "QC", "H2Y 1C6", "Canada", 45.501689, -73.567256),
    ("Kraków", "Małopolskie", "30-001", "Poland", 50.064651, 19.944981),
    ("New York", "NY", "10001", "United States", 40.712776, -74.005974),
    ("London", None, "EC1A 1BB", "United Kingdom", 51.507351, -0.127758),
    ("San Francisco", "CA", "94105", "United States", 37.774929, -122.419418),
)
_STREETS = _values("Main Street|Bahnhofstrasse|Rue de la Paix|Avenida Paulista|Market St|銀座通り")
_FIRST = _values(
    "Anna|Jürgen|Zoë|José|Søren|Łukasz|陽翔|さくら|Mary|John|Aisha|Chloé|Björn|Priya|Mateo|Olga|Wei|Fatima"
)
_LAST = _values(
    "Müller|O'Brien|García|Nguyễn|佐藤|Smith|Kowalski|Dubois|Rossi|Johansson|Okafor|Tanaka|"
    "Schäfer|Ivanova|Papadopoulos|Lee"
)
_TITLES = _values("CEO|CTO|VP Sales|Head of Operations|Buyer|Engineer|Directrice financière|営業部長")
_INVALID_EMAILS = ("not-an-email", "jane.doe@", "@example.com", "john doe@example.com")
_NEXT_STEPS = _values("Send proposal|Schedule demo|Legal review|Follow up after holidays|Pricing call")
_SENTENCES = (
    "Long-standing customer with several subsidiaries.",
    "Prefers contact by e-mail — Grüße aus München.",
    "Expansion planned in APAC (東京, Singapore) next year.",
    "Renewal negotiations ongoing; watch the budget cycle.",
    "Key stakeholder changed in Q3 🚀; re-qualify needs.",
)


# Seeding random.Random costs ~9 us and choice()/randint() ~1 us each, most of the time of a record;
# its C base class seeds in ~3 us, and the helpers below draw from random() alone.
_Rng = random.Random.__mro__[1]


def _pick(rng: _Rng, values: Sequence[Any]) -> Any:
    """``rng.choice``."""
    return values[int(rng.random() * len(values))]


def _int(rng: _Rng, low: int, high: int) -> int:
    """``rng.randint``, cheaper."""
    return low + int(rng.random() * (high - low + 1))


def _uniform(rng: _Rng, low: float, high: float) -> float:
    return low + (high - low) * rng.random()


def _lognormal(rng: _Rng, mu: float, sigma: float) -> float:
    """exp(N(mu, sigma)) by Box-Muller."""
    normal = math.sqrt(-2.0 * math.log(1.0 - rng.random())) * math.cos(2.0 * math.pi * rng.random())
    return math.exp(mu + sigma * normal)


def _ascii(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isascii() and ch.isalnum()) or "x"


def _description(rng: _Rng) -> str | None:
    roll = rng.random()
    if roll < 0.3:
        return None
    if roll < 0.4:  # longer than one Notion text object (2,000 characters)
        parts: list[str] = []
        length, target = 0, _int(rng, 2_100, 4_500)
        while length < target:
            parts.append(_pick(rng, _SENTENCES))
            length += len(parts[-1]) + 1
        return "\n".join(parts)
    start, count = _int(rng, 0, len(_SENTENCES) - 1), _int(rng, 1, 3)
    return " ".join(_SENTENCES[(start + k) % len(_SENTENCES)] for k in range(count))


def _multi(rng: _Rng, values: tuple[str, ...]) -> str | None:
    chosen = [v for v in values if rng.random() < 0.3]
    return ";".join(chosen) or None


def _phone(rng: _Rng) -> str | None:
    return None if rng.random() < 0.2 else f"+1 ({_int(rng, 200, 999)}) 555-{_int(rng, 0, 9999):04d}"


def _account_name(rng: _Rng, index: int) -> str:
    """An Account's Name: the first draws of its generator, so formulas can read it alone."""
    fixed = {0: "Müller & Søn", 1: "東京 Trading"}
    return (
        fixed.get(index) or f"{_pick(rng, _COMPANY_A)} {_pick(rng, _COMPANY_B)}{_pick(rng, _COMPANY_SUFFIX)}"
    )


# ----------------------------------------------------------------------------------------- the data


class LazyRecord(dict):
    """A base record that computes the fields a filter reads on first access and keeps only those:
    filtering on Id, IsDeleted or timestamps never builds the whole record, and a page of matches
    held for paging stays small. :func:`full_record` builds every field for output."""

    __slots__ = ("_data", "_index", "_obj")

    def __init__(self, data: SalesforceData, obj: str, index: int) -> None:
        super().__init__()
        self._data, self._obj, self._index = data, obj, index

    def __missing__(self, key: str) -> Any:
        if key in CHEAP_FIELDS:
            value = self._data.cheap_value(self._obj, self._index, key)
        else:
            value = self._data.generate(self._obj, self._index)[key]
        self[key] = value
        return value

    def full(self) -> dict[str, Any]:
        return self._data.generate(self._obj, self._index)

    @property
    def index(self) -> int:
        """The base index: the record is ``generate(obj, index)``, untouched by admin edits."""
        return self._index


def full_record(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """Every field of a query result (generated afresh for a base record, not kept)."""
    return record.full() if isinstance(record, LazyRecord) else record


@dataclass
class ResultSet:
    """Matching records of a query, as of the moment it ran (admin edits later are not seen)."""

    sobject: str
    total: int
    fields: list[str]
    _factory: Callable[[], Iterator[Mapping[str, Any]]]

    def __post_init__(self) -> None:
        self._iterator = self._factory()
        self._position = 0
        self._last: tuple[int, int, list[Mapping[str, Any]]] | None = None
        self._lock = threading.Lock()

    def records(self) -> Iterator[Mapping[str, Any]]:
        """Every matching record, afresh (for aggregates; pages keep their own position)."""
        return self._factory()

    def page(self, offset: int, size: int) -> list[Mapping[str, Any]]:
        """Records ``[offset, offset + size)``; sequential pages and the repeat of the last page (a
        client retrying after a dropped connection) are O(size), any other offset re-runs the query."""
        with self._lock:
            if self._last is not None and self._last[:2] == (offset, size):
                return self._last[2]
            if offset != self._position:
                self._iterator = self._factory()
                self._position = 0
                for _ in itertools.islice(self._iterator, offset):
                    self._position += 1
            records = list(itertools.islice(self._iterator, size))
            self._position += len(records)
            self._last = (offset, size, records)
            return records


@dataclass(frozen=True)
class Change:
    """One committed admin change, as Change Data Capture reports it (see the sandbox's Pub/Sub API).

    ``change_type`` is CREATE, UPDATE, DELETE or UNDELETE; ``record`` is the record after the change;
    ``fields`` the fields the change wrote (LastModifiedDate included); ``commit_ms`` when it committed.
    """

    obj: str
    change_type: str
    record: dict[str, Any]
    fields: tuple[str, ...]
    commit_ms: int


class SalesforceData:
    """Schema + lazily generated records + admin overrides for Account, Contact and Opportunity.

    Every admin change is passed, in commit order and under the data lock, to each of ``listeners``
    (a :class:`Change`); the sandbox's Pub/Sub API turns them into change events.
    """

    def __init__(
        self,
        records: int = 1000,
        seed: int = 7,
        *,
        days: int = 30,
        end: datetime = DEFAULT_END,
        invalid_emails: bool = True,
        custom_fields: int = 40,
        long_text_fields: int = 0,
        extra_objects: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.records, self.seed, self.invalid_emails, self.clock = records, seed, invalid_emails, clock
        self.custom_fields = custom_fields
        self.long_text_fields = long_text_fields
        self.end_ms = int(end.timestamp() * 1000)
        self.start_ms = self.end_ms - days * DAY_MS
        objects = (_account(custom_fields, long_text_fields), CONTACT, OPPORTUNITY, ACCOUNT_HISTORY)
        self.sobjects = {o.name: o for o in (*objects, *(EXTRA_OBJECTS[name] for name in extra_objects))}
        self.fields = {name: o.field_map() for name, o in self.sobjects.items()}
        self._by_lower = {name.lower(): o for name, o in self.sobjects.items()}
        self._custom_text = [name for name in self.fields["Account"] if name.startswith("Custom_Text_")]
        self._long_text = [name for name in self.fields["Account"] if name.startswith("Long_Notes_")]
        self.counts = {name: records * _PER_ACCOUNT[name] for name in self.sobjects}
        self._overrides: dict[str, dict[int, dict[str, Any] | None]] = {n: {} for n in self.sobjects}
        self._created = dict.fromkeys(self.sobjects, 0)
        # The delete log behind getDeleted: index -> epoch ms of its deletion, for admin deletes
        # (base records generated deleted were deleted at their SystemModstamp).
        self._delete_log: dict[str, dict[int, int]] = {n: {} for n in self.sobjects}
        self._writes = dict.fromkeys(self.sobjects, 0)  # admin writes per object (see formula_inputs)
        self._lock = threading.Lock()
        self._last_write_ms = 0
        self._edges = {name: self._edge_stamps(name) for name in self.sobjects}
        self.listeners: list[Callable[[Change], None]] = []

    def parameters(self) -> dict[str, Any]:
        """Everything besides (object, index) that decides a base record's values."""
        return {
            "records": self.records,
            "seed": self.seed,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "invalid_emails": self.invalid_emails,
            "custom_fields": self.custom_fields,
            "long_text_fields": self.long_text_fields,
        }

    # ------------------------------------------------------------------------------- timestamps

    def _base_stamp(self, obj: str, index: int) -> int:
        count = self.counts[obj]
        span = self.end_ms - self.start_ms
        ms = self.start_ms + ((2 * index + 1) * span) // (2 * count)
        return ms - ms % 1000

    def _edge_stamps(self, obj: str) -> dict[int, int]:
        edges: dict[int, int] = {}
        count = self.counts[obj]
        midnight = self.start_ms + DAY_MS
        while midnight < self.end_ms and count:
            k = _first(0, count, lambda i, m=midnight: self._base_stamp(obj, i) >= m) - 1
            if (
                0 <= k < count - 1
                and self._base_stamp(obj, k) >= midnight - DAY_MS
                and self._base_stamp(obj, k + 1) < midnight + DAY_MS
                and k not in edges
                and k + 1 not in edges
            ):
                edges[k] = midnight - 1
                edges[k + 1] = midnight
            midnight += DAY_MS
        return edges

    def stamp_ms(self, obj: str, index: int) -> int:
        """Base SystemModstamp of record ``index`` (non-decreasing in the index)."""
        edge = self._edges[obj].get(index)
        return edge if edge is not None else self._base_stamp(obj, index)

    def cheap_value(self, obj: str, index: int, name: str) -> Any:
        """One of CHEAP_FIELDS of base record ``index``, computed without the rest of the record."""
        if name == "Id":
            return make_id(self.sobjects[obj].key_prefix, index)
        if name == "IsDeleted":
            return _mix(self.seed, self.sobjects[obj].code, index, 1) % 50 == 0
        if name == self.sobjects[obj].stamp_field:
            return format_datetime(self.stamp_ms(obj, index))
        return self._dates(obj, index)[name]

    def _dates(self, obj: str, index: int) -> dict[str, str]:
        """LastModifiedDate (at or up to 2 h before SystemModstamp) and CreatedDate (up to 400 days
        earlier still)."""
        stamp = self.stamp_ms(obj, index)
        if not self.sobjects[obj].writable:
            return {"CreatedDate": format_datetime(stamp)}
        h = _mix(self.seed, self.sobjects[obj].code, index, 2)
        modified = stamp if h % 3 else stamp - (h >> 8) % 7_200 * 1000
        created = modified - (h >> 24) % (400 * 86_400) * 1000
        return {
            "SystemModstamp": format_datetime(stamp),
            "LastModifiedDate": format_datetime(modified),
            "CreatedDate": format_datetime(created),
        }

    # ------------------------------------------------------------------------------ generation

    def generate(self, obj: str, index: int) -> dict[str, Any]:
        """Every field of base record ``index`` (ignores admin overrides)."""
        rng = _Rng(_mix(self.seed, self.sobjects[obj].code, index, 3))
        record: dict[str, Any] = {
            "Id": self.cheap_value(obj, index, "Id"),
            "IsDeleted": self.cheap_value(obj, index, "IsDeleted"),
            **self._dates(obj, index),
        }
        record.update(getattr(self, f"_gen_{obj.lower()}")(rng, index))
        return self._with_formulas(obj, record)

    # -------------------------------------------------------------------------------- formulas

    def _with_formulas(self, obj: str, record: dict[str, Any]) -> dict[str, Any]:
        """Set the formula fields as Salesforce computes them: when the record is read, from its
        current values and (cross-object) its Account's, so they change without a modstamp."""
        if obj == "Account":
            revenue, employees = record["AnnualRevenue"], record["NumberOfEmployees"]
            record["Revenue_Per_Employee__c"] = (
                round(revenue / employees, 2) if revenue and employees else None
            )
        elif obj == "Contact":
            account = parse_id("001", record["AccountId"]) if record["AccountId"] else None
            record["Account_Name__c"] = None if account is None else self.account_name(account)
        return record

    def account_name(self, index: int) -> str | None:
        """The current Name of Account ``index`` (None once it is purged)."""
        if index in self._overrides["Account"]:
            override = self._overrides["Account"][index]
            return None if override is None else override["Name"]
        if index >= self.counts["Account"]:
            return None
        return _account_name(_Rng(_mix(self.seed, self.sobjects["Account"].code, index, 3)), index)

    def formula_inputs(self, obj: str) -> int:
        """How often the other records its formulas read were written (Contact reads Account):
        rendered Contacts cached before such a write are stale."""
        return self._writes["Account"] if obj == "Contact" else 0

    def _gen_account(self, rng: _Rng, index: int) -> dict[str, Any]:
        name = _account_name(rng, index)
        revenue = None if rng.random() < 0.2 else float(round(_lognormal(rng, 15, 1.5), -3))
        employees = None if rng.random() < 0.15 else int(_lognormal(rng, 4, 1.8)) + 1
        record: dict[str, Any] = {
            "Name": name,
            "Type": None if rng.random() < 0.1 else _pick(rng, ACCOUNT_TYPES),
            "Industry": None if rng.random() < 0.15 else _pick(rng, INDUSTRIES),
            "AnnualRevenue": revenue,
            "NumberOfEmployees": employees,
            "Website": None if rng.random() < 0.2 else f"https://www.{_ascii(name)}.example.com",
            "Phone": _phone(rng),
            "Description": _description(rng),
            "Active__c": rng.random() < 0.8,
            "Regions__c": _multi(rng, REGIONS),
            "Rating_Score__c": None if rng.random() < 0.25 else round(_uniform(rng, 0, 100), 2),
            "BillingGeocodeAccuracy": None,
        }
        if rng.random() < 0.15:
            record.update(
                dict.fromkeys(
                    (
                        "BillingStreet",
                        "BillingCity",
                        "BillingState",
                        "BillingPostalCode",
                        "BillingCountry",
                        "BillingLatitude",
                        "BillingLongitude",
                    ),
                    None,
                )
            )
        else:
            city, state, postal, country, lat, lon = _pick(rng, _CITIES)
            record.update(
                BillingStreet=f"{_int(rng, 1, 250)} {_pick(rng, _STREETS)}",
                BillingCity=city,
                BillingState=state,
                BillingPostalCode=postal,
                BillingCountry=country,
                BillingLatitude=round(lat + _uniform(rng, -0.05, 0.05), 6),
                BillingLongitude=round(lon + _uniform(rng, -0.05, 0.05), 6),
            )
        for name in self._custom_text:
            record[name] = f"{name[:-3].replace('_', ' ')} value {index}" if rng.random() < 0.1 else None
        record.update(dict.fromkeys(self._long_text))  # empty until an edit fills them
        return record

    def _gen_contact(self, rng: _Rng, index: int) -> dict[str, Any]:
        first = None if rng.random() < 0.05 else _pick(rng, _FIRST)
        last = _pick(rng, _LAST)
        roll = rng.random()
        account = None if roll < 0.03 else (_int(rng, 0, self.records - 1) if roll < 0.05 else index // 2)
        if self.invalid_emails and index % 97 == 13:
            email: str | None = _INVALID_EMAILS[index % len(_INVALID_EMAILS)]
        else:
            local = f"{_ascii(first or 'x')}.{_ascii(last)}{index}"
            email = None if rng.random() < 0.1 else f"{local}@example.com"
        birth = None
        if rng.random() < 0.6:
            birth = f"{_int(rng, 1950, 2004)}-{_int(rng, 1, 12):02d}-{_int(rng, 1, 28):02d}"
        return {
            "AccountId": None if account is None else make_id("001", account),
            "FirstName": first,
            "LastName": last,
            "Name": f"{first} {last}" if first else last,
            "Email": email,
            "Phone": _phone(rng),
            "Title": None if rng.random() < 0.2 else _pick(rng, _TITLES),
            "Birthdate": birth,
            "HasOptedOutOfEmail": rng.random() < 0.1,
            "Description": _description(rng),
        }

    def _gen_accounthistory(self, rng: _Rng, index: int) -> dict[str, Any]:
        field = _pick(rng, HISTORY_FIELDS)
        return {
            "AccountId": make_id("001", index),
            "CreatedById": make_id("005", 1),
            "Field": field,
            "OldValue": None if rng.random() < 0.3 else f"old {field.lower()} {index}",
            "NewValue": f"new {field.lower()} {index}",
        }

    def _gen_lead(self, rng: _Rng, index: int) -> dict[str, Any]:
        return {
            "LastName": _pick(rng, _LAST),
            "Company": f"{_pick(rng, _COMPANY_A)} {_pick(rng, _COMPANY_B)}",
            "Status": _pick(rng, LEAD_STATUSES),
            "Email": None if rng.random() < 0.2 else f"lead{index}@example.com",
        }

    def _gen_case(self, rng: _Rng, index: int) -> dict[str, Any]:
        return {
            "AccountId": make_id("001", index),
            "Subject": f"Case #{index}: {_pick(rng, _NEXT_STEPS)}",
            "Status": _pick(rng, CASE_STATUSES),
        }

    def _gen_opportunity(self, rng: _Rng, index: int) -> dict[str, Any]:
        stage = _pick(rng, tuple(STAGES))
        close = datetime.fromtimestamp(
            self.stamp_ms("Opportunity", index) / 1000 + _int(rng, -60, 120) * 86_400, UTC
        )
        return {
            "AccountId": None if rng.random() < 0.02 else make_id("001", index),
            "Name": f"{_pick(rng, PRODUCTS)} deal #{index}",
            "StageName": stage,
            "Amount": None if rng.random() < 0.1 else round(_uniform(rng, 1_000, 500_000), 2),
            "Probability": STAGES[stage],
            "CloseDate": close.strftime("%Y-%m-%d"),
            "Type": None if rng.random() < 0.2 else _pick(rng, OPPORTUNITY_TYPES),
            "NextStep": None if rng.random() < 0.4 else _pick(rng, _NEXT_STEPS),
            "IsClosed": stage.startswith("Closed"),
            "IsWon": stage == "Closed Won",
            "Products__c": _multi(rng, PRODUCTS),
            "Description": _description(rng),
        }

    # ------------------------------------------------------------------------------- helpers

    def edge_records(self, obj: str) -> list[dict[str, str]]:
        """Records at 23:59:59.999 and 00:00:00.000 UTC: [{"Id":..., "SystemModstamp":...}], in order."""
        return [
            {"Id": make_id(self.sobjects[obj].key_prefix, i), "SystemModstamp": format_datetime(ms)}
            for i, ms in sorted(self._edges[obj].items())
        ]

    def invalid_email_ids(self) -> list[str]:
        """Ids of the Contacts whose Email is deliberately invalid."""
        if not self.invalid_emails:
            return []
        return [make_id("003", i) for i in range(13, self.counts["Contact"], 97)]

    def remove_field(self, obj: str, name: str) -> None:
        """An admin deletes a field (or hides it from the integration user): describe no longer lists
        it and a query naming it fails with INVALID_FIELD."""
        sobject = self._resolve(obj)
        if name not in self.fields[obj]:
            raise KeyError(f"{obj} has no field {name}")
        kept = replace(sobject, fields=tuple(f for f in sobject.fields if f.name != name))
        self.sobjects[obj] = self._by_lower[obj.lower()] = kept
        self.fields[obj] = kept.field_map()

    def sobject(self, name: str) -> SObject | None:
        """Object names are case-insensitive, as in Salesforce URLs."""
        return self._by_lower.get(name.lower())

    def _resolve(self, obj: str) -> SObject:
        sobject = self.sobjects.get(obj)
        if sobject is None:
            raise DataError("NOT_FOUND", "The requested resource does not exist", 404)
        return sobject

    def _writable_index(self, obj: str, record_id: str) -> int:
        """The index of a record an admin may write (history objects are Salesforce's alone)."""
        sobject = self._resolve(obj)
        if not sobject.writable:
            raise DataError("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be updated: {sobject.label}")
        return self._index(obj, record_id)

    def _index(self, obj: str, record_id: str) -> int:
        index = parse_id(self._resolve(obj).key_prefix, record_id)
        if (
            index is None
            or index >= self.counts[obj] + self._created[obj]
            or (self._overrides[obj].get(index, {}) is None)
        ):
            raise DataError(
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {record_id}",
                404,
            )
        return index

    def get(self, obj: str, record_id: str) -> dict[str, Any]:
        """The current record (admin overrides applied), deleted or not."""
        return self._current(obj, self._index(obj, record_id))

    def _current(self, obj: str, index: int) -> dict[str, Any]:
        override = self._overrides[obj].get(index)
        return self._with_formulas(obj, dict(override)) if override is not None else self.generate(obj, index)

    # ----------------------------------------------------------------------------- admin edits

    def _now(self) -> str:
        ms = max(int(self.clock() * 1000), self._last_write_ms + 1)
        self._last_write_ms = ms
        return format_datetime(ms)

    def _check_fields(self, obj: str, changes: Mapping[str, Any]) -> None:
        fields = self.fields[obj]
        for name in changes:
            if name not in fields:
                raise DataError("INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}")
            if not fields[name].updateable:
                raise DataError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. "
                    "Please check the security settings of this field and verify that it is "
                    "read/write for your profile or permission set.",
                )

    def _store(self, obj: str, index: int, record: dict[str, Any]) -> dict[str, Any]:
        if obj == "Contact":
            record["Name"] = (
                f"{record['FirstName']} {record['LastName']}" if record["FirstName"] else (record["LastName"])
            )
        if obj == "Opportunity":
            record["IsClosed"] = str(record["StageName"]).startswith("Closed")
            record["IsWon"] = record["StageName"] == "Closed Won"
        self._overrides[obj] = {**self._overrides[obj], index: record}  # copy-on-write: see snapshot()
        self._writes[obj] += 1
        return self._with_formulas(obj, dict(record))

    def update(
        self, obj: str, record_id: str, changes: Mapping[str, Any], *, modstamp: str | None = None
    ) -> dict[str, Any]:
        """Apply field changes like a user edit: LastModifiedDate and SystemModstamp become now.

        ``modstamp`` (a past datetime) commits the change late, as a long transaction does: its
        SystemModstamp is when the transaction wrote the record, earlier than records read since.
        """
        with self._lock:
            index = self._writable_index(obj, record_id)
            self._check_fields(obj, changes)
            record = self._edit(obj, index, changes, modstamp)
            self._publish(obj, "UPDATE", record, changes)
            return record

    def delete(self, obj: str, record_id: str, *, hard: bool = False, modstamp: str | None = None) -> None:
        """Soft delete (IsDeleted, visible to queryAll) or, with ``hard``, purge it from every query
        (a hard delete, or a soft-deleted record emptied from the Recycle Bin). Either way the
        deletion stays in the delete log that :meth:`deleted` (getDeleted) reads. ``modstamp``: when
        the deletion was committed, if not now. Emptying a record from the Recycle Bin publishes no
        second DELETE event."""
        with self._lock:
            index = self._writable_index(obj, record_id)
            if not hard:
                record = self._edit(obj, index, {"IsDeleted": True}, modstamp)
                self._delete_log[obj][index] = parse_datetime(record["SystemModstamp"])
                self._publish(obj, "DELETE", record, {})
                return
            record = self._current(obj, index)
            if not record["IsDeleted"]:
                self._delete_log[obj][index] = parse_datetime(modstamp or self._now())
                self._publish(obj, "DELETE", record, {})
            self._overrides[obj] = {**self._overrides[obj], index: None}
            self._writes[obj] += 1

    def deleted(self, obj: str, start_ms: int, end_ms: int) -> list[tuple[str, int]]:
        """(Id, deleted at) of the records deleted in ``[start_ms, end_ms)``, oldest first."""
        self._resolve(obj)
        log, overrides = dict(self._delete_log[obj]), self._overrides[obj]
        first = _first(0, self.counts[obj], lambda i: self.stamp_ms(obj, i) >= start_ms)
        last = _first(first, self.counts[obj], lambda i: self.stamp_ms(obj, i) >= end_ms)
        for index in range(first, last):  # generated deleted, unless undeleted since
            if self.cheap_value(obj, index, "IsDeleted") and overrides.get(index) is None:
                log.setdefault(index, self.stamp_ms(obj, index))
        prefix = self.sobjects[obj].key_prefix
        return sorted(
            ((make_id(prefix, index), ms) for index, ms in log.items() if start_ms <= ms < end_ms),
            key=lambda pair: (pair[1], pair[0]),
        )

    def undelete(self, obj: str, record_id: str) -> dict[str, Any]:
        """Restore a soft-deleted record from the Recycle Bin (its SystemModstamp becomes now)."""
        with self._lock:
            index = self._writable_index(obj, record_id)
            record = self._current(obj, index)
            if not record["IsDeleted"]:
                raise DataError("UNDELETE_FAILED", "Entity is not in the recycle bin")
            now = self._now()
            record.update(IsDeleted=False, LastModifiedDate=now, SystemModstamp=now)
            record = self._store(obj, index, record)
            self._delete_log[obj].pop(index, None)
            self._publish(obj, "UNDELETE", record, {})
            return record

    def _publish(
        self, obj: str, change_type: str, record: dict[str, Any], changes: Mapping[str, Any]
    ) -> None:
        """Tell the listeners; called under the lock, so they see changes in commit order."""
        if change_type == "UPDATE":
            fields = (*changes, "LastModifiedDate")
        else:
            fields = tuple(name for name, value in record.items() if value is not None)
        # Committed now; an edit stamped now has its SystemModstamp as commit time (a late one: now).
        commit_ms = max(int(self.clock() * 1000), parse_datetime(record["SystemModstamp"]))
        change = Change(obj, change_type, dict(record), fields, commit_ms)
        for listener in self.listeners:
            listener(change)

    def _edit(
        self, obj: str, index: int, changes: Mapping[str, Any], modstamp: str | None = None
    ) -> dict[str, Any]:
        """Change a live record as a user would: LastModifiedDate and SystemModstamp become now
        (or ``modstamp``, for a late commit)."""
        record = self._current(obj, index)
        if record["IsDeleted"]:
            raise DataError("ENTITY_IS_DELETED", "entity is deleted")
        now = self._now() if modstamp is None else format_datetime(parse_datetime(modstamp))
        record.update(changes, LastModifiedDate=now, SystemModstamp=now)
        return self._store(obj, index, record)

    def create(self, obj: str, fields: Mapping[str, Any]) -> str:
        """Insert a record; returns its Id (indexes past the generated ones)."""
        with self._lock:
            if not self._resolve(obj).writable:
                raise DataError("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be inserted: {obj}")
            self._check_fields(obj, fields)
            missing = [name for name in REQUIRED_ON_CREATE[obj] if fields.get(name) is None]
            if missing:
                message = f"Required fields are missing: [{', '.join(missing)}]"
                raise DataError("REQUIRED_FIELD_MISSING", message)
            index = self.counts[obj] + self._created[obj]
            self._created[obj] += 1
            now = self._now()
            record: dict[str, Any] = {
                f.name: False if f.type == "boolean" else None for f in self.sobjects[obj].fields
            }
            record.update(
                fields,
                Id=make_id(self.sobjects[obj].key_prefix, index),
                CreatedDate=now,
                LastModifiedDate=now,
                SystemModstamp=now,
            )
            record = self._store(obj, index, record)
            self._publish(obj, "CREATE", record, {})
            return record["Id"]

    # ---------------------------------------------------------------------------------- queries

    def snapshot(self, obj: str) -> dict[int, dict[str, Any] | None]:
        """The overrides as of now; stored records are replaced, never mutated, so this is stable."""
        return self._overrides[obj]

    def _index_range(self, obj: str, ranged: list[Comparison]) -> tuple[int, int]:
        """Base indexes that can satisfy the stamp field's and Id comparisons (bisection)."""
        lo, hi = 0, self.counts[obj]
        prefix = self.sobjects[obj].key_prefix
        for c in ranged:
            if c.field != "Id":
                ms = parse_datetime(c.value)
                first_ge = _first(lo, hi, lambda i, t=ms: self.stamp_ms(obj, i) >= t)
                first_gt = _first(lo, hi, lambda i, t=ms: self.stamp_ms(obj, i) > t)
            else:
                first_ge = _first(lo, hi, lambda i, v=c.value: make_id(prefix, i) >= v)
                first_gt = _first(lo, hi, lambda i, v=c.value: make_id(prefix, i) > v)
            if c.op in (">=", "="):
                lo = first_ge
            elif c.op == ">":
                lo = first_gt
            if c.op == "<":
                hi = first_ge
            elif c.op in ("<=", "="):
                hi = first_gt
        return lo, max(lo, hi)

    def execute(self, query: Query, include_deleted: bool) -> ResultSet:
        """Run a bound query. Orders compatible with the index order (none, Id, stamp field[, Id],
        all ASC or all DESC) stream lazily; any other ORDER BY sorts the matches in memory."""
        obj = query.sobject
        stamp = self.sobjects[obj].stamp_field
        overrides = self.snapshot(obj)
        conjuncts, pure = query.conjuncts()
        ranged = [
            c
            for c in conjuncts
            if c.field in (stamp, "Id") and c.value is not None and c.op in ("=", "<", "<=", ">", ">=")
        ]
        lo, hi = self._index_range(obj, ranged)
        # Base records in [lo, hi) already satisfy the ranged comparisons: check only the rest.
        residual = compile_all([c for c in conjuncts if c not in ranged]) if pure else query.predicate

        def matches(record: Mapping[str, Any], predicate: Any = query.predicate) -> bool:
            return (include_deleted or not record["IsDeleted"]) and (predicate is None or predicate(record))

        order = [name for name, _ in query.order]
        descending = bool(query.order) and query.order[0][1]
        native = order in ([], ["Id"], [stamp], [stamp, "Id"]) and all(
            d == descending for _, d in query.order
        )

        def key(record: Mapping[str, Any]) -> Any:
            return record["Id"] if order == ["Id"] else (record[stamp], record["Id"])

        live = (self._with_formulas(obj, dict(r)) for r in overrides.values() if r is not None)
        extra = [r for r in live if matches(r)]
        stop = None if query.limit is None else query.offset + query.limit

        def base() -> Iterator[Mapping[str, Any]]:
            indexes = range(hi - 1, lo - 1, -1) if descending else range(lo, hi)
            records = (LazyRecord(self, obj, i) for i in indexes if i not in overrides)
            return (r for r in records if matches(r, residual))

        def stream() -> Iterator[Mapping[str, Any]]:
            if native and extra:
                extra.sort(key=key, reverse=descending)
                merged: Iterator[Mapping[str, Any]] = heapq.merge(base(), extra, key=key, reverse=descending)
            elif native:
                merged = base()
            else:
                rows = [*base(), *extra]
                for name, desc in reversed(query.order):
                    rows.sort(key=lambda r, n=name: (r[n] is not None, r[n]), reverse=desc)
                merged = iter(rows)
            return itertools.islice(merged, query.offset, stop)

        total = sum(1 for _ in itertools.islice(base(), stop)) + len(extra)  # LIMIT: count no further
        total = max(0, (total if stop is None else min(total, stop)) - query.offset)
        return ResultSet(obj, total, query.fields, stream)


def _first(lo: int, hi: int, pred: Callable[[int], bool]) -> int:
    """The first index in [lo, hi) where the monotone ``pred`` holds (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


# ------------------------------------------------------------------------------------------ describe

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "currency": "xsd:double",
    "double": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "address": "urn:address",
}
_TEXT_TYPES = {"id", "reference", "string", "textarea", "picklist", "multipicklist", "email", "phone", "url"}


def describe_field(field: Field) -> dict[str, Any]:
    """One entry of ``fields`` in an sObject describe, with the keys Salesforce returns."""
    text = field.type in _TEXT_TYPES
    creatable = field.updateable and not field.system
    return {
        "aggregatable": field.sortable and field.type != "boolean",
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": field.length * 3 if text else 0,
        "calculated": field.formula is not None,
        "calculatedFormula": field.formula,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": field.compound,
        "controllerName": None,
        "createable": creatable,
        "custom": field.custom,
        "defaultValue": False if field.type == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": field.type == "boolean" or field.system,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": field.precision if field.type == "int" else 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": False,
        "extraTypeInfo": "plaintextarea" if field.type == "textarea" else None,
        "filterable": field.filterable,
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": field.sortable and field.type not in ("double", "currency", "percent", "datetime"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": field.name == "Id",
        "inlineHelpText": None,
        "label": field.label,
        "length": field.length if text else 0,
        "mask": None,
        "maskType": None,
        "name": field.name,
        "nameField": field.name == "Name",
        "namePointing": False,
        "nillable": field.nillable,
        "permissionable": field.nillable and not field.system,
        "picklistValues": [
            {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
            for v in field.picklist
        ],
        "polymorphicForeignKey": False,
        "precision": field.precision if field.type in ("double", "currency", "percent") else 0,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(field.reference_to),
        "relationshipName": field.name[:-2] if field.type == "reference" else None,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": field.name.endswith("GeocodeAccuracy"),
        "scale": field.scale,
        "searchPrefilterable": False,
        "soapType": _SOAP_TYPES.get(field.type, "xsd:string"),
        "sortable": field.sortable,
        "type": field.type,
        "unique": False,
        "updateable": field.updateable,
        "writeRequiresMasterRead": False,
    }


def _urls(sobject: SObject, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{sobject.name}"
    return {
        "compactLayouts": f"{base}/describe/compactLayouts",
        "rowTemplate": f"{base}/{{ID}}",
        "describe": f"{base}/describe",
        "sobject": base,
    }


def describe_global_entry(sobject: SObject, version: str) -> dict[str, Any]:
    return {
        "activateable": False,
        "createable": sobject.writable,
        "custom": False,
        "customSetting": False,
        "deletable": sobject.writable,
        "deprecatedAndHidden": False,
        "feedEnabled": False,
        "hasSubtypes": False,
        "isSubtype": False,
        "keyPrefix": sobject.key_prefix,
        "label": sobject.label,
        "labelPlural": sobject.label_plural,
        "layoutable": True,
        "mergeable": sobject.name != "Opportunity",
        "mruEnabled": True,
        "name": sobject.name,
        "queryable": True,
        "replicateable": True,
        "retrieveable": True,
        "searchable": True,
        "triggerable": sobject.writable,
        "undeletable": sobject.writable,
        "updateable": sobject.writable,
        "urls": _urls(sobject, version),
    }


def describe_sobject(sobject: SObject, version: str) -> dict[str, Any]:
    """``GET /sobjects/<Object>/describe``."""
    children = [
        {
            "cascadeDelete": False,
            "childSObject": child,
            "deprecatedAndHidden": False,
            "field": "AccountId",
            "junctionIdListNames": [],
            "junctionReferenceTo": [],
            "relationshipName": plural,
            "restrictedDelete": False,
        }
        for child, plural in (("Contact", "Contacts"), ("Opportunity", "Opportunities"))
        if sobject.name == "Account"
    ]
    return {
        **describe_global_entry(sobject, version),
        "actionOverrides": [],
        "childRelationships": children,
        "compactLayoutable": True,
        "fields": [describe_field(f) for f in sobject.fields],
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "recordTypeInfos": [],
        "searchLayoutable": True,
        "supportedScopes": [{"label": "All " + sobject.label_plural.lower(), "name": "everything"}],
    }
