"""The B1 Service Layer simulator speaks the Service Layer protocol (raw HTTP, no client library)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from b1twilio_pipeline_tests.certificates import self_signed_certificate
from b1twilio_sim.sap_b1 import SapB1Simulator

CREDENTIALS = {"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": "manager"}
FROZEN = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def frozen_clock() -> datetime:
    return FROZEN


@pytest.fixture
def client_for() -> Iterator[Callable[[SapB1Simulator], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(sim: SapB1Simulator, login: bool = True) -> httpx.Client:
        client = httpx.Client(base_url=sim.base_url + "/", timeout=5)
        clients.append(client)
        if login:
            assert client.post("Login", json=CREDENTIALS).status_code == 200
        return client

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_login_sets_session_and_route_cookies(sap_sim_factory, version) -> None:
    sim = sap_sim_factory(version=version, session_timeout_s=1500 * 60)
    response = httpx.post(f"{sim.base_url}/Login", json=CREDENTIALS)
    assert response.status_code == 200
    body = response.json()
    context_key = "odata.metadata" if version == "v1" else "@odata.context"
    assert next(iter(body)) == context_key
    assert body["SessionTimeout"] == 1500
    cookies = response.headers.get_list("set-cookie")
    assert f"B1SESSION={body['SessionId']}; HttpOnly" in cookies
    assert "ROUTEID=.node1; path=/b1s" in cookies


def test_login_errors_have_b1_codes_and_version_shapes(sap_sim_factory) -> None:
    v1 = sap_sim_factory(version="v1")
    v2 = sap_sim_factory(version="v2")
    wrong_password = httpx.post(f"{v1.base_url}/Login", json={**CREDENTIALS, "Password": "nope"})
    assert wrong_password.status_code == 401
    assert wrong_password.json() == {"error": {"code": -304, "message": {
        "lang": "en-us", "value": "Fail to NONE-SSO login from SLD."}}}
    unknown_db = httpx.post(f"{v2.base_url}/Login", json={**CREDENTIALS, "CompanyDB": "NOPE"})
    assert unknown_db.status_code == 401
    error = unknown_db.json()["error"]
    assert error["code"] == "-306" and isinstance(error["message"], str) and "details" in error
    assert httpx.post(f"{v1.url}/b1s/v1/login", json=CREDENTIALS).status_code == 404  # case-sensitive path


def test_idle_timeout_is_renewed_by_each_call_then_expires_with_301(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(session_timeout_s=1800)
    client = client_for(sim)
    for _ in range(3):  # 3 x 20 minutes of activity: never idle for 30
        sim.advance_clock(20 * 60)
        assert client.get("Items('A00001')").status_code == 200
    sim.advance_clock(31 * 60)
    expired = client.get("Items('A00001')")
    assert expired.status_code == 401
    assert expired.json()["error"] == {"code": 301, "message": {
        "lang": "en-us", "value": "Invalid session or session already timeout."}}


def test_expiry_mode_5002_answers_400_with_a_session_message(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(expiry_mode="5002", version="v2")
    client = client_for(sim)
    sim.expire_sessions()
    answer = client.get("Invoices")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "-5002"
    assert "session" in answer.json()["error"]["message"].lower()


def test_logout_invalidates_the_session(sap_sim, client_for) -> None:
    client = client_for(sap_sim)
    assert client.post("Logout").status_code == 204
    assert client.get("Invoices").status_code == 401


def test_default_paging_next_link_is_relative_and_repeats_the_query(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False)
    sim.generate_invoices(45)
    client = client_for(sim)
    params = {"$select": "DocEntry,DocTotal", "$filter": "DocEntry gt 2", "$orderby": "DocEntry desc"}
    first = client.get("Invoices", params=params).json()
    assert len(first["value"]) == 20
    assert list(first["value"][0]) == ["DocEntry", "DocTotal"]
    assert first["value"][0]["DocEntry"] == 45
    link = first["odata.nextLink"]
    assert link.startswith("Invoices?") and "$skip=20" in link
    assert "$filter=DocEntry%20gt%202" in link and "$select=DocEntry,DocTotal" in link and "$orderby" in link
    entries = [row["DocEntry"] for row in first["value"]]
    while link:
        page = client.get(link).json()
        entries += [row["DocEntry"] for row in page["value"]]
        link = page.get("odata.nextLink")
    assert entries == list(range(45, 2, -1))


def test_prefer_maxpagesize_b1s_pagesize_and_no_paging(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False, version="v2")
    sim.generate_invoices(30)
    client = client_for(sim)
    big = client.get("Invoices", headers={"Prefer": "odata.maxpagesize=25"})
    assert big.headers["Preference-Applied"] == "odata.maxpagesize=25"
    assert len(big.json()["value"]) == 25 and "$skip=25" in big.json()["@odata.nextLink"]
    assert big.headers["Content-Type"] == "application/json;odata.metadata=minimal;charset=utf-8"
    assert big.headers["OData-Version"] == "4.0"
    header_sized = client.get("Invoices", headers={"B1S-PageSize": "7"}).json()
    assert len(header_sized["value"]) == 7
    everything = client.get("Invoices", headers={"Prefer": "odata.maxpagesize=0"}).json()
    assert len(everything["value"]) == 30 and "@odata.nextLink" not in everything


def test_top_carries_across_pages_and_counts(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False)
    sim.generate_invoices(60)
    client = client_for(sim)
    first = client.get("Invoices", params={"$top": "50", "$inlinecount": "allpages"}).json()
    assert first["odata.count"] == 60
    seen = len(first["value"])
    link = first["odata.nextLink"]
    while link:
        page = client.get(link).json()
        seen += len(page["value"])
        link = page.get("odata.nextLink")
    assert seen == 50
    count = client.get("Invoices/$count", params={"$filter": "DocEntry le 12"})
    assert count.text == "12" and count.headers["Content-Type"].startswith("text/plain")


def test_full_last_page_may_carry_a_next_link_to_an_empty_page(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False, next_link_on_full_page=True)
    sim.generate_invoices(20)
    client = client_for(sim)
    first = client.get("Invoices").json()
    assert len(first["value"]) == 20 and "odata.nextLink" in first
    last = client.get(first["odata.nextLink"]).json()
    assert last["value"] == [] and "odata.nextLink" not in last


def test_filter_compares_update_time_to_the_minute(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False, clock=frozen_clock)
    for stamp in ("10:14:59", "10:15:00", "10:15:59", "10:16:00"):
        sim.add_document("Invoices", {"UpdateDate": "2026-11-20", "UpdateTime": stamp, "DocTotal": 1.0})
    client = client_for(sim)

    def times(expression: str) -> list[str]:
        rows = client.get("Invoices", params={"$filter": expression, "$select": "UpdateTime"}).json()["value"]
        return [row["UpdateTime"] for row in rows]

    assert times("UpdateDate eq '2026-11-20' and UpdateTime eq '10:15'") == ["10:15:00", "10:15:59"]
    assert times("UpdateTime le '10:15'") == ["10:14:59", "10:15:00", "10:15:59"]
    assert times("UpdateTime gt '10:15:30'") == ["10:16:00"]  # seconds in the literal are ignored too
    assert times("(UpdateTime lt '10:15' or UpdateTime ge '10:16') and not (DocEntry eq 1)") == ["10:16:00"]


def test_filter_on_status_strings_numbers_and_dates(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False, version="v2", clock=frozen_clock)
    sim.add_document("Invoices", {"CardCode": "C20000", "DocDueDate": "2026-09-01", "Comments": "O'Neil"})
    sim.add_document("Invoices", {"CardCode": "C30000", "DocDueDate": "2026-11-01",
                                  "DocumentStatus": "bost_Close"})
    sim.add_document("Invoices", {"CardCode": "C30000", "DocDueDate": "2026-12-01", "Cancelled": "tYES"})
    client = client_for(sim)

    def entries(expression: str) -> list[int]:
        rows = client.get("Invoices", params={"$filter": expression}).json()["value"]
        return [row["DocEntry"] for row in rows]

    assert entries("DocumentStatus eq 'bost_Open' and DocDueDate lt '2026-10-25'") == [1]
    assert entries("DocDueDate ge '2026-11-01T00:00:00Z'") == [2, 3]
    assert entries("Cancelled ne 'tNO' or DocEntry eq 1") == [1, 3]
    assert entries("Comments eq 'O''Neil'") == [1]
    assert entries("Comments eq null") == [2, 3]
    assert entries("CardCode eq 'C30000' and DocEntry ge 3") == [3]


@pytest.mark.parametrize("expression", [
    "contains(CardName,'x')", "DocTotal gt '5'", "NoSuchField eq 1", "DocEntry eq", "(DocEntry eq 1",
    "DocEntry add 1 eq 2", "DocumentLines eq 1", "UpdateTime ge 'noon'",
])
def test_unsupported_filters_are_b1_400_errors(sap_sim, client_for, expression) -> None:
    response = client_for(sap_sim).get("Invoices", params={"$filter": expression})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -1000
    assert response.json()["error"]["message"]["value"]


def test_select_orderby_and_bad_options(sap_sim, client_for) -> None:
    client = client_for(sap_sim)
    rows = client.get("Items", params={"$select": "ItemCode,ItemWarehouseInfoCollection",
                                       "$orderby": "QuantityOnStock desc,ItemCode"}).json()["value"]
    assert set(rows[0]) == {"ItemCode", "ItemWarehouseInfoCollection"}
    assert rows[0]["ItemCode"] == "C00001"  # 200 on stock, the most
    assert client.get("Items", params={"$select": "Nope"}).status_code == 400
    assert client.get("Invoices", params={"$expand": "DocumentLines"}).status_code == 400
    assert client.get("Invoices", params={"$top": "x"}).status_code == 400
    assert client.get("NoSuchEntities").status_code == 404


def test_single_entities_and_not_found(sap_sim, client_for) -> None:
    client = client_for(sap_sim)
    item = client.get("Items('A00002')").json()
    assert item["odata.metadata"].endswith("#Items/@Element")
    warehouses = {row["WarehouseCode"]: row for row in item["ItemWarehouseInfoCollection"]}
    assert warehouses["01"]["InStock"] < warehouses["01"]["MinimalStock"]  # seeded below its reorder point
    assert client.get("Invoices(1)").json()["DocEntry"] == 1
    selected = client.get("Invoices(1)", params={"$select": "DocNum,DocumentStatus"}).json()
    assert set(selected) == {"odata.metadata", "DocNum", "DocumentStatus"}
    missing = client.get("Invoices(9999)")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == -2028


def test_seeded_data_is_reproducible_and_relative_to_the_clock(sap_sim_factory) -> None:
    first = sap_sim_factory(clock=frozen_clock)
    second = sap_sim_factory(clock=frozen_clock)
    assert first.data == second.data
    today = FROZEN.date().isoformat()
    new_purchase = [doc for doc in first.data["PurchaseInvoices"].values() if doc["UpdateDate"] == today]
    assert len(new_purchase) == 1 and new_purchase[0]["UpdateTime"] == "09:30:00"
    overdue = [doc for doc in first.data["Invoices"].values()
               if doc["DocumentStatus"] == "bost_Open" and doc["DocDueDate"] < "2026-10-25"]
    assert len(overdue) >= 2 and any(0 < doc["PaidToDate"] < doc["DocTotal"] for doc in overdue)
    assert first.data["IncomingPayments"] and first.data["PurchaseOrders"]
    assert len(first.data["Items"]) == 8


def test_admin_changes_are_stamped_by_the_simulated_clock_in_its_timezone(sap_sim_factory) -> None:
    sim = sap_sim_factory(seed=False, clock=frozen_clock, timezone="Asia/Tokyo")
    doc = sim.add_document("PurchaseInvoices", {"CardCode": "V10000", "DocTotal": 99.5})
    assert (doc["UpdateDate"], doc["UpdateTime"], doc["CardName"]) == ("2026-11-24", "18:30:00",
                                                                        "Acme Office Supplies")
    sim.advance_clock(6 * 3600)
    changed = sim.update_document("PurchaseInvoices", doc["DocEntry"], {"Comments": "late"})
    assert (changed["UpdateDate"], changed["UpdateTime"]) == ("2026-11-25", "00:30:00")
    assert changed["DocTotal"] == 99.5  # an explicit total survives later changes
    explicit = sim.add_document("Invoices", {"UpdateDate": "2020-01-02", "UpdateTime": "07:08",
                                             "DocDueDate": "2020-02-01"})
    assert (explicit["UpdateDate"], explicit["UpdateTime"], explicit["DocDueDate"]) == (
        "2020-01-02", "07:08:00", "2020-02-01")
    with pytest.raises(ValueError, match="unknown field"):
        sim.add_document("Invoices", {"DocTotl": 1})


def test_payments_and_stock_changes_update_what_b1_would(sap_sim_factory) -> None:
    sim = sap_sim_factory(seed=False, clock=frozen_clock)
    invoice = sim.add_document("Invoices", {"DocTotal": 100.0, "UpdateDate": "2026-01-01"})
    sim.add_document("IncomingPayments", {"PaymentInvoices": [{"DocEntry": invoice["DocEntry"],
                                                                "SumApplied": 100.0}]})
    paid = sim.get_record("Invoices", invoice["DocEntry"])
    assert paid is not None
    assert (paid["PaidToDate"], paid["DocumentStatus"]) == (100.0, "bost_Close")
    assert paid["UpdateDate"] == "2026-11-24"  # applying the payment changed the invoice
    payment = sim.get_record("IncomingPayments", 1)
    assert payment is not None and payment["TransferSum"] == 100.0 and "UpdateDate" not in payment
    sim.add_document("Items", {"ItemCode": "X1", "ItemWarehouseInfoCollection": [
        {"WarehouseCode": "01", "InStock": 5}, {"WarehouseCode": "02", "InStock": 7}]})
    item = sim.set_item_stock("X1", "02", 1)
    assert item["QuantityOnStock"] == 6.0


def test_user_defined_tables(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False, version="v2")
    client = client_for(sim)
    assert client.post("U_B1TW_AUDIT", json={"Code": "x"}).status_code == 404  # table not created yet
    table = {"TableName": "B1TW_AUDIT", "TableDescription": "Twilio receipts", "TableType": "bott_NoObject"}
    assert client.post("UserTablesMD", json=table).status_code == 201
    again = client.post("UserTablesMD", json=table)
    assert again.status_code == 400 and again.json()["error"]["code"] == "-2035"
    assert "already exists" in again.json()["error"]["message"]
    field = {"Name": "MsgSid", "Type": "db_Alpha", "Size": 34, "Description": "SID", "SubType": "st_None",
             "TableName": "@B1TW_AUDIT"}
    assert client.post("UserFieldsMD", json=field).status_code == 201
    assert client.post("UserFieldsMD", json=field).json()["error"]["code"] == "-2035"
    record = {"Code": "rule-1:7:dana", "Name": "receipt", "U_MsgSid": "SM" + "a" * 32}
    assert client.post("U_B1TW_AUDIT", json=record).status_code == 201
    assert client.post("U_B1TW_AUDIT", json=record).json()["error"]["code"] == "-2035"
    assert client.post("U_B1TW_AUDIT", json={"Code": "y", "U_Nope": 1}).status_code == 400
    assert client.post("U_B1TW_AUDIT", json={"Code": "z", "U_MsgSid": "S" * 35}).status_code == 400  # > Size
    path = "U_B1TW_AUDIT('rule-1:7:dana')"
    assert client.patch(path, json={"U_MsgSid": "SM2"}).status_code == 204
    assert client.get(path).json()["U_MsgSid"] == "SM2"
    assert sim.udt_rows("@B1TW_AUDIT") == [{"Code": "rule-1:7:dana", "Name": "receipt", "U_MsgSid": "SM2"}]
    assert [row["Code"] for row in client.get("U_B1TW_AUDIT").json()["value"]] == ["rule-1:7:dana"]
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404


def test_injected_faults_answer_in_b1_shape_or_drop(sap_sim, client_for) -> None:
    client = client_for(sap_sim)
    sap_sim.set_faults(fail_next=1, fail_status=503)
    failed = client.get("Invoices")
    assert failed.status_code == 503 and failed.json()["error"]["code"] == 503
    sap_sim.set_faults(fail_next=1, fail_status=500)
    assert client.get("Invoices").json()["error"]["code"] == 407  # a failing node
    sap_sim.set_faults(drop_next=1)
    with pytest.raises(httpx.TransportError):
        client.get("Invoices")
    assert client.get("Invoices").status_code == 200


def test_latency_and_slow_logins_do_not_hold_up_other_requests(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False, login_latency_s=0.6, reject_parallel_logins=False)
    client = client_for(sim)
    sim.set_faults(latency_s=0.3)
    answers: list[int] = []
    started = time.monotonic()
    workers = [threading.Thread(target=lambda: answers.append(httpx.post(
        f"{sim.base_url}/Login", json=CREDENTIALS, timeout=5).status_code)) for _ in range(4)]
    workers += [threading.Thread(target=lambda: answers.append(client.get("Invoices").status_code))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert answers.count(200) == 5
    assert time.monotonic() - started < 2.0  # 4 logins of 0.9 s each and a read of 0.3 s, side by side


def test_request_log_keeps_the_query_string_headers_and_body(sap_sim, client_for) -> None:
    client = client_for(sap_sim)
    client.get("Invoices", params={"$select": "DocEntry", "$top": "2"}, headers={"B1S-PageSize": "7"})
    login, read = sap_sim.requests
    assert login.method == "POST" and b'"CompanyDB"' in login.body and login.status == 200
    assert read.path == "/b1s/v1/Invoices?%24select=DocEntry&%24top=2" and read.status == 200
    assert read.headers["B1S-PageSize"] == read.headers.get("b1s-pagesize") == "7"
    assert "B1SESSION=" in read.headers["Cookie"]


def test_https_with_a_certificate(sap_sim_factory, tmp_path) -> None:
    cert_path, key_path = self_signed_certificate(tmp_path)
    sim = sap_sim_factory(version="v2", ssl_certfile=cert_path, ssl_keyfile=key_path)
    assert sim.base_url.startswith("https://127.0.0.1:") and sim.base_url.endswith("/b1s/v2")
    with httpx.Client(base_url=sim.base_url + "/", verify=str(cert_path), timeout=5) as client:
        login = client.post("Login", json=CREDENTIALS)
        assert login.status_code == 200
        assert login.json()["@odata.context"].startswith(sim.base_url)
        assert client.get("Items/$count").text == "8"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{sim.base_url}/Items", timeout=5)
    with pytest.raises(ValueError, match="both"):
        SapB1Simulator(ssl_certfile=cert_path)


def test_http_admin_api_drives_a_separate_simulator(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False, clock=frozen_clock)
    admin = httpx.Client(base_url=sim.url + "/_admin/", timeout=5)
    try:
        created = admin.post("documents/Invoices", json={"CardCode": "C20000", "DocTotal": 10}).json()
        assert created["DocEntry"] == 1 and created["CardName"] == "Maxi-Teq"
        assert admin.patch("documents/Invoices/1", json={"Comments": "x"}).json()["Comments"] == "x"
        assert admin.post("documents/Invoices", json={"Bad": 1}).status_code == 400
        admin.post("documents/Items", json={"ItemCode": "Z9", "ItemWarehouseInfoCollection": [
            {"WarehouseCode": "01", "InStock": 3}]})
        assert admin.post("stock", json={"item_code": "Z9", "warehouse": "01", "in_stock": 0}).json()[
            "QuantityOnStock"] == 0
        assert admin.post("clock", json={"advance_s": 3600}).json()["time"] == "10:30:00"
        assert admin.post("generate_invoices", json={"count": 500}).json() == {
            "created": 500, "first_doc_entry": 2, "last_doc_entry": 501}
        client = client_for(sim)
        client.get("Invoices")
        counts = admin.get("requests").json()
        assert counts["logins"] == 1 and counts["counts"]["GET /b1s/v1/Invoices"] == 1
        assert admin.post("expire_sessions").json() == {"expired": 1}
        assert admin.post("faults", json={"fail_all": True}).json()["fail_all"] is True
        assert client.get("Invoices").status_code == 503
        admin.post("faults", json={"fail_all": False})
        admin.delete("requests")
        assert admin.get("requests").json()["total"] == 0
        assert admin.get("udt/B1TW_AUDIT").json() == {"table": "B1TW_AUDIT", "rows": []}
        assert admin.get("nope").status_code == 404
    finally:
        admin.close()


def test_bulk_generation_of_100k_invoices_is_fast(sap_sim_factory, client_for) -> None:
    sim = sap_sim_factory(seed=False)
    started = datetime.now(UTC)
    sim.generate_invoices(100_000)
    assert (datetime.now(UTC) - started).total_seconds() < 10
    client = client_for(sim)
    page = client.get("Invoices", params={"$skip": "99990", "$select": "DocEntry"},
                      headers={"Prefer": "odata.maxpagesize=1000"}).json()
    assert [row["DocEntry"] for row in page["value"]] == list(range(99991, 100001))


def test_command_line_prints_listening_line_and_only_demo_passwords() -> None:
    env = {**os.environ, "B1_PASSWORD": "s3cret-from-env"}
    env.pop("B1_COMPANY_DB", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "b1twilio_sim.sap_b1", "--host", "127.0.0.1", "--port", "0",
         "--version", "v2", "--no-seed"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the simulator did not print its listening line"
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        login = httpx.post(f"{url}/b1s/v2/Login", json={**CREDENTIALS, "Password": "s3cret-from-env"})
        assert login.status_code == 200
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "s3cret-from-env" not in err and "CompanyDB=SBODEMOUS" in err


def test_command_line_stops_on_sigint() -> None:
    process = subprocess.Popen([sys.executable, "-m", "b1twilio_sim.sap_b1", "--port", "0", "--no-seed"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().removeprefix("listening on ")
        assert httpx.get(f"{url}/_admin/info", timeout=5).json()["version"] == "v1"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0 and out == "" and "Traceback" not in err
