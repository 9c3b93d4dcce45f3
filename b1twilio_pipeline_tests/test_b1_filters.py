"""Incremental window filters and select lists, as text and against the running B1 simulator."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from b1twilio_pipeline.alerts.rules.kinds import RULE_KINDS, reads_by_entity
from b1twilio_pipeline.b1.definitions import read_specs
from b1twilio_pipeline.b1.filters import (
    and_,
    date_window_filter,
    quote,
    update_window_filter,
)
from b1twilio_pipeline_tests.fixtures_sap import sap_session_for

SPECS = read_specs(reads_by_entity())  # what the pipeline asks B1 for, entity by entity
DOCUMENT_FIELDS = SPECS["purchase_invoices"].select
PURCHASE_ORDER_FIELDS = SPECS["purchase_orders"].select
PAYMENT_FIELDS = SPECS["incoming_payments"].select
ITEM_FIELDS = SPECS["item_stock"].select

BERLIN = "Europe/Berlin"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_window_filter_text_in_utc() -> None:
    text = update_window_filter(utc("2026-11-20T10:00"), utc("2026-11-20T10:15"), b1_timezone="UTC")
    assert text == (
        "(UpdateDate gt '2026-11-20' or (UpdateDate eq '2026-11-20' and UpdateTime ge '09:59')) and "
        "(UpdateDate lt '2026-11-20' or (UpdateDate eq '2026-11-20' and UpdateTime le '10:15'))")


def test_window_is_converted_to_the_b1_server_time_zone_across_midnight_and_dst() -> None:
    winter = update_window_filter(utc("2026-01-15T22:50"), utc("2026-01-15T23:05"), b1_timezone=BERLIN)
    assert winter == (
        "(UpdateDate gt '2026-01-15' or (UpdateDate eq '2026-01-15' and UpdateTime ge '23:49')) and "
        "(UpdateDate lt '2026-01-16' or (UpdateDate eq '2026-01-16' and UpdateTime le '00:05'))")
    new_york = ZoneInfo("America/New_York")  # the same instants, expressed in another zone
    same = update_window_filter(utc("2026-01-15T22:50").astimezone(new_york),
                                utc("2026-01-15T23:05").astimezone(new_york), b1_timezone=BERLIN)
    assert same == winter
    summer = update_window_filter(utc("2026-07-01T08:00"), utc("2026-07-01T08:15"), b1_timezone=BERLIN,
                                  overlap=timedelta(minutes=5), date_field="DocDate", time_field="DocTime")
    assert "DocDate eq '2026-07-01' and DocTime ge '09:55'" in summer
    assert "DocTime le '10:15'" in summer


def test_window_filter_rejects_naive_datetimes_reversed_windows_and_unknown_zones() -> None:
    with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
        update_window_filter(datetime(2026, 1, 1), utc("2026-01-01T00:15"), b1_timezone="UTC")
    with pytest.raises(ValueError, match="before its start"):
        update_window_filter(utc("2026-01-01T01:00"), utc("2026-01-01T00:15"), b1_timezone="UTC")
    with pytest.raises(ValueError, match="unknown B1 time zone 'Nowhere/City'"):
        update_window_filter(utc("2026-01-01T00:00"), utc("2026-01-01T00:15"), b1_timezone="Nowhere/City")


def test_quote_date_window_and_and() -> None:
    assert quote("O'Neil") == "'O''Neil'"
    assert quote(12) == "'12'"
    assert date_window_filter("DocDate", date(2026, 11, 1), date(2026, 11, 3)) == (
        "DocDate ge '2026-11-01' and DocDate le '2026-11-03'")
    with pytest.raises(ValueError, match="before start date"):
        date_window_filter("DocDate", date(2026, 11, 3), date(2026, 11, 1))
    assert and_("A eq 1", None, "B eq 2") == "(A eq 1) and (B eq 2)"
    assert and_("A eq 1") == "A eq 1" and and_() is None


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_window_returns_exactly_the_documents_inside_including_the_edges(sap_sim_factory, version) -> None:
    sim = sap_sim_factory(seed=False, version=version)
    stamps = {
        ("2026-11-20", "09:58:59"): False,  # before start minus the one-minute overlap
        ("2026-11-20", "09:59:00"): True,  # inside the overlap
        ("2026-11-20", "10:00:00"): True,  # on the start edge
        ("2026-11-20", "10:07:31"): True,
        ("2026-11-20", "10:14:59"): True,
        ("2026-11-20", "10:15:00"): True,  # on the end edge
        ("2026-11-20", "10:15:59"): True,  # same minute as the end edge: SL compares minutes only
        ("2026-11-20", "10:16:00"): False,
        ("2026-11-19", "10:05:00"): False,  # right time, wrong day
        ("2026-11-21", "10:05:00"): False,
    }
    expected = set()
    for (day, time), inside in stamps.items():
        doc = sim.add_document("PurchaseInvoices", {"UpdateDate": day, "UpdateTime": time, "DocTotal": 1})
        if inside:
            expected.add(doc["DocEntry"])
    window = update_window_filter(utc("2026-11-20T10:00"), utc("2026-11-20T10:15"), b1_timezone="UTC")
    with sap_session_for(sim, page_size=3) as session:
        found = [row["DocEntry"] for row in session.get_all("PurchaseInvoices", filter=window,
                                                             select=DOCUMENT_FIELDS, orderby="DocEntry")]
    assert sorted(found) == sorted(expected) and len(found) == len(set(found))


def test_window_in_a_non_utc_b1_time_zone_across_local_midnight(sap_sim_factory) -> None:
    sim = sap_sim_factory(seed=False, timezone="Europe/Berlin")
    stamps = {
        ("2026-01-15", "23:48:30"): False,
        ("2026-01-15", "23:49:00"): True,  # overlap minute
        ("2026-01-15", "23:59:59"): True,
        ("2026-01-16", "00:00:00"): True,
        ("2026-01-16", "00:05:30"): True,  # end edge minute
        ("2026-01-16", "00:06:00"): False,
        ("2026-01-15", "00:01:00"): False,  # the UTC day's early morning, local time: far outside
    }
    expected = set()
    for (day, time), inside in stamps.items():
        doc = sim.add_document("Invoices", {"UpdateDate": day, "UpdateTime": time, "DocTotal": 1})
        if inside:
            expected.add(doc["DocEntry"])
    start = utc("2026-01-15T22:50")  # 23:50 in Berlin
    window = update_window_filter(start, start + timedelta(minutes=15), b1_timezone=sim.timezone)
    with sap_session_for(sim) as session:
        found = {row["DocEntry"] for row in session.get_all("Invoices", filter=window, select="DocEntry")}
    assert found == expected


def test_documents_changed_by_the_simulator_clock_fall_in_the_current_window(sap_sim_factory) -> None:
    frozen = utc("2026-03-29T00:59:30")  # one minute before Berlin's spring-forward
    sim = sap_sim_factory(seed=False, clock=lambda: frozen, timezone="Europe/Berlin")
    before = sim.add_document("PurchaseOrders", {"DocTotal": 5})
    sim.advance_clock(60)  # 03:00:30 local after the DST jump
    after = sim.add_document("PurchaseOrders", {"DocTotal": 6})
    assert (before["UpdateTime"], after["UpdateTime"]) == ("01:59:30", "03:00:30")
    window = update_window_filter(utc("2026-03-29T00:45"), utc("2026-03-29T01:01"), b1_timezone=BERLIN)
    with sap_session_for(sim) as session:
        found = [row["DocEntry"] for row in session.get_all("PurchaseOrders", filter=window,
                                                             select=PURCHASE_ORDER_FIELDS)]
    assert found == [before["DocEntry"], after["DocEntry"]]


def test_payments_are_polled_by_doc_date(sap_sim_factory) -> None:
    sim = sap_sim_factory(seed=False)
    for day in ("2026-11-01", "2026-11-02", "2026-11-04"):
        sim.add_document("IncomingPayments", {"DocDate": day, "CashSum": 10})
    with sap_session_for(sim) as session:
        window = date_window_filter("DocDate", date(2026, 11, 2), date(2026, 11, 4))
        rows = list(session.get_all("IncomingPayments", select=PAYMENT_FIELDS, filter=window))
    assert [row["DocDate"] for row in rows] == ["2026-11-02", "2026-11-04"]


def test_select_lists_name_real_fields_and_quote_round_trips(sap_sim_factory) -> None:
    sim = sap_sim_factory()
    sim.add_document("Invoices", {"CardCode": "C99", "CardName": "O'Neil & Sons"})
    with sap_session_for(sim) as session:
        for spec in SPECS.values():
            rows = list(session.get_all(spec.entity, select=spec.select))
            assert rows and set(rows[0]) == set(spec.select), spec.entity
        name = sim.data["Invoices"][11]["CardName"]
        named = list(session.get_all("Invoices", filter=f"CardName eq {quote(name)}", select="DocEntry"))
    assert named == [{"DocEntry": 11}]


def test_every_field_a_rule_kind_reads_is_asked_for() -> None:
    """The select is built from what the kinds declare: a payment rule summing cheques and cards finds
    them in what was read (they were once missing from the payments select)."""
    by_entity = {spec.entity: set(spec.select) for spec in SPECS.values()}
    for kind in RULE_KINDS:
        for entity, fields in kind.READS.items():
            assert set(fields) <= by_entity[entity], (kind.__name__, set(fields) - by_entity[entity])
    assert {"PaymentChecks", "PaymentCreditCards"} <= by_entity["IncomingPayments"]
