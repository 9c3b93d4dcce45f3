"""SapB1Session / SapB1Resource against the running B1 simulator (real HTTP, no mocks)."""

from __future__ import annotations

import logging
import ssl
import threading

import dagster as dg
import pytest

from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.errors import SapB1AuthError, SapB1Error, SapB1Unavailable
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.core.settings import ConfigurationError
from b1twilio_pipeline_tests.certificates import self_signed_certificate
from b1twilio_pipeline_tests.fixtures_sap import sap_session_for


def test_one_login_for_fifty_calls_and_cookies_on_every_call(sap_sim) -> None:
    with sap_session_for(sap_sim) as session:
        for index in range(50):
            assert session.get(f"Invoices({index % 5 + 1})")["DocEntry"] == index % 5 + 1
        assert session.logins == 1 and session.requests_made == 51
    assert sap_sim.logins == 1
    data_calls = [entry for entry in sap_sim.requests if "Invoices(" in entry.path]
    assert len(data_calls) == 50
    assert all("B1SESSION=" in entry.headers["Cookie"] and "ROUTEID=.node1" in entry.headers["Cookie"]
               for entry in data_calls)
    assert sap_sim.logouts == 1  # the context manager logged out


def test_parallel_first_calls_share_one_login(sap_sim_factory) -> None:
    sim = sap_sim_factory(login_latency_s=0.2)  # overlapping logins would get 500/299 "SAML Login Failed"
    results: list[int] = []
    with sap_session_for(sim) as session:
        threads = [threading.Thread(target=lambda: results.append(session.count("Invoices")))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert session.logins == 1
    assert results == [10] * 8 and sim.logins == 1


@pytest.mark.parametrize(("mode", "version"), [("301", "v1"), ("5002", "v1"), ("301", "v2"), ("5002", "v2")])
def test_session_expired_mid_pagination_is_renewed_once_without_loss(sap_sim_factory, mode, version) -> None:
    sim = sap_sim_factory(seed=False, expiry_mode=mode, version=version)
    sim.generate_invoices(95)
    with sap_session_for(sim, page_size=20) as session:
        entries = []
        for row in session.get_all("Invoices", select=["DocEntry", "UpdateDate"], orderby="DocEntry"):
            entries.append(row["DocEntry"])
            if len(entries) == 30:  # inside the second page: the third page request meets an expired session
                sim.expire_sessions()
        assert session.logins == 2 and session.renewals == 1
    assert entries == list(range(1, 96))
    assert sim.logins == 2
    assert sim.count_requests("GET", "Invoices") == 5 + 1  # 5 pages + the one rejected request


def test_idle_timeout_on_the_simulated_clock_is_renewed(sap_sim_factory) -> None:
    sim = sap_sim_factory(session_timeout_s=60)
    with sap_session_for(sim) as session:
        session.count("Items")
        sim.advance_clock(61)
        assert session.count("Items") == 8
        assert session.logins == 2
        assert session.session_timeout_min == 1


def test_5002_without_renewal_enabled_is_an_error(sap_sim_factory) -> None:
    sim = sap_sim_factory(expiry_mode="5002")
    with sap_session_for(sim, renew_on_5002=False) as session:
        session.count("Items")
        sim.expire_sessions()
        with pytest.raises(SapB1Error) as caught:
            session.count("Items")
    assert caught.value.code == -5002 and caught.value.status == 400
    assert sim.logins == 1


def test_bad_credentials_one_clear_error_and_exactly_one_login_attempt(sap_sim) -> None:
    secret = "wrong-Pa55word"
    session = sap_session_for(sap_sim, password=secret)
    with pytest.raises(SapB1AuthError) as caught:
        session.count("Invoices")
    message = str(caught.value)
    assert "manager" in message and "SBODEMOUS" in message and secret not in message
    assert "\n" not in message and "-304" in message
    with pytest.raises(SapB1AuthError):  # a repeat does not knock on the door again
        list(session.get_all("Invoices"))
    session.close()
    assert sap_sim.logins == 1 and sap_sim.count_requests() == 1
    assert caught.value.status == 401 and caught.value.code == -304


def test_a_refused_login_is_tried_again_only_after_the_wait(sap_sim) -> None:
    sap_sim.change_password("set-by-the-b1-admin")
    patient = sap_session_for(sap_sim, password="manager", retry_refused_login_after_s=300.0)
    for _ in range(3):  # three sensor ticks within the wait: one login attempt
        with pytest.raises(SapB1AuthError):
            patient.count("Invoices")
    refused_logins = sap_sim.logins
    eager = sap_session_for(sap_sim, password="manager", retry_refused_login_after_s=0.0)
    with pytest.raises(SapB1AuthError):
        eager.count("Invoices")
    sap_sim.change_password("manager")  # the B1 admin sets it back

    assert refused_logins == 1
    assert eager.count("Invoices") == len(sap_sim.data["Invoices"])  # logged in again, accepted
    with pytest.raises(SapB1AuthError):
        patient.count("Invoices")  # still waiting
    assert sap_sim.logins == refused_logins + 2


def test_unknown_company_database_is_named_in_the_error(sap_sim_factory) -> None:
    sim = sap_sim_factory(version="v2")
    with pytest.raises(SapB1AuthError, match="company database 'SBOTYPO'") as caught, \
            sap_session_for(sim, company_db="SBOTYPO") as session:
        session.count("Invoices")
    assert caught.value.code == -306  # parsed from v2's string code
    assert sim.logins == 1


def test_three_503s_are_survived(sap_sim_factory, caplog) -> None:
    sap_sim = sap_sim_factory(password="Sup3r-secret")
    with sap_session_for(sap_sim, max_retries=4) as session, caplog.at_level(logging.WARNING):
        session.count("Items")
        sap_sim.set_faults(fail_next=3, fail_status=503)
        assert session.count("Items") == 8
        assert session.requests_made == 1 + 1 + 4
    assert sap_sim.count_requests("GET", "Items/$count") == 5
    assert caplog.text.count("retrying") == 3 and "Sup3r-secret" not in caplog.text


def test_permanent_outage_fails_clearly_after_the_retry_budget(sap_sim_factory) -> None:
    sap_sim = sap_sim_factory(password="Sup3r-secret")
    with sap_session_for(sap_sim, max_retries=3) as session:
        session.count("Items")
        sap_sim.set_faults(fail_all=True, fail_status=503)
        with pytest.raises(SapB1Unavailable) as caught:
            session.count("Items")
        sap_sim.set_faults(fail_all=False)
    message = str(caught.value)
    assert sap_sim.base_url in message and "4 times" in message and "HTTP 503" in message
    assert "\n" not in message and "Sup3r-secret" not in message
    assert sap_sim.count_requests("GET", "Items/$count") == 1 + 4


def test_failing_login_node_is_retried_then_reported(sap_sim) -> None:
    sap_sim.set_faults(fail_all=True, fail_status=500)
    session = sap_session_for(sap_sim, max_retries=2)
    with pytest.raises(SapB1Unavailable, match="login failed 3 times; last error: HTTP 500, code 407"):
        session.count("Items")
    sap_sim.set_faults(fail_all=False)
    assert session.count("Items") == 8  # an outage is not a credential error: the next call logs in
    session.close()
    assert sap_sim.logins == 4


def test_dropped_connections_are_survived(sap_sim) -> None:
    with sap_session_for(sap_sim) as session:
        session.count("Items")
        sap_sim.set_faults(drop_next=2)
        assert [row["ItemCode"] for row in session.get_all("Items", select="ItemCode")][:2] == ["A00001",
                                                                                               "A00002"]
    assert sap_sim.count_requests("GET", "Items") == 3
    assert sap_sim.logins == 1


def test_page_size_1000_fetches_1000_invoices_in_one_request_vs_50_by_default(sap_sim_factory) -> None:
    sim = sap_sim_factory(seed=False)
    sim.generate_invoices(1000)
    with sap_session_for(sim, page_size=1000) as session:
        big = [row["DocEntry"] for row in session.get_all("Invoices", select=["DocEntry"])]
    assert sim.count_requests("GET", "Invoices") == 1
    sim.reset_requests()
    with sap_session_for(sim, page_size=20) as session:
        small = [row["DocEntry"] for row in session.get_all("Invoices", select=["DocEntry"])]
    assert sim.count_requests("GET", "Invoices") == 50
    assert big == small == list(range(1, 1001))
    prefers = {entry.headers.get("Prefer") for entry in sim.requests if entry.method == "GET"}
    assert prefers == {"odata.maxpagesize=20"}


def test_a_full_last_page_with_a_next_link_ends_at_the_empty_page(sap_sim_factory) -> None:
    sim = sap_sim_factory(seed=False, next_link_on_full_page=True)
    sim.generate_invoices(40)
    with sap_session_for(sim, page_size=20) as session:
        rows = list(session.get_all("Invoices", select="DocEntry", top=100))
    assert [row["DocEntry"] for row in rows] == list(range(1, 41))
    assert sim.count_requests("GET", "Invoices") == 3


def test_a_next_link_to_another_origin_is_not_followed_with_the_session(sap_sim_factory) -> None:
    elsewhere = sap_sim_factory(seed=False)  # another server that must never see our session cookie
    sim = sap_sim_factory(seed=False)
    sim.generate_invoices(40)
    sim.next_link_base = elsewhere.base_url + "/"
    with sap_session_for(sim, page_size=20) as session, pytest.raises(SapB1Error, match="not followed"):
        list(session.get_all("Invoices", select="DocEntry"))
    assert elsewhere.requests == []


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v1_and_v2_envelopes_and_errors(sap_sim_factory, version) -> None:
    sim = sap_sim_factory(version=version)
    with sap_session_for(sim, page_size=3) as session:
        invoices = list(session.get_all("Invoices", filter="DocumentStatus eq 'bost_Open'",
                                        select=("DocEntry", "DocDueDate")))
        assert len(invoices) == session.count("Invoices", "DocumentStatus eq 'bost_Open'") > 3
        due = invoices[0]["DocDueDate"]
        assert len(due) == (10 if version == "v1" else 20)
        with pytest.raises(SapB1Error) as caught:
            session.get("Invoices(424242)")
        assert (caught.value.status, caught.value.code) == (404, -2028)
        assert "No matching records" in (caught.value.b1_message or "")
        with pytest.raises(SapB1Error, match="Property 'Nope' of 'Invoices' is invalid"):
            list(session.get_all("Invoices", filter="Nope eq 1"))


def test_user_table_create_is_idempotent_via_already_exists(sap_sim) -> None:
    table = {"TableName": "B1TW_AUDIT", "TableDescription": "Twilio receipts", "TableType": "bott_NoObject"}
    with sap_session_for(sap_sim) as session:
        assert session.post("UserTablesMD", table)["TableName"] == "B1TW_AUDIT"
        with pytest.raises(SapB1Error) as caught:
            session.post("UserTablesMD", table)
        assert caught.value.already_exists and caught.value.code == -2035
        session.post("UserFieldsMD", {"Name": "MsgSid", "Type": "db_Alpha", "Size": 64,
                                      "TableName": "@B1TW_AUDIT"})
        record = {"Code": "k1", "Name": "k1", "U_MsgSid": "SM1"}
        session.post("U_B1TW_AUDIT", record)
        with pytest.raises(SapB1Error) as duplicate:
            session.post("U_B1TW_AUDIT", record)
        assert duplicate.value.already_exists
        session.patch("U_B1TW_AUDIT('k1')", {"U_MsgSid": "SM2"})
        assert session.get("U_B1TW_AUDIT('k1')")["U_MsgSid"] == "SM2"
        with pytest.raises(SapB1Error) as missing:
            session.post("U_NOT_THERE", {"Code": "x"})
        assert missing.value.status == 404 and not missing.value.already_exists
    assert sap_sim.udt_rows("B1TW_AUDIT") == [{"Code": "k1", "Name": "k1", "U_MsgSid": "SM2"}]


def test_resource_in_a_real_materialize_logs_in_once_and_out_at_teardown(sap_sim, sap_resource) -> None:
    @dg.asset
    def open_invoice_count(sap_b1: SapB1Resource) -> dg.MaterializeResult:
        rows = list(sap_b1.get_all("Invoices", filter="DocumentStatus eq 'bost_Open'", select="DocEntry"))
        items = sap_b1.count("Items")
        return dg.MaterializeResult(metadata={"open": len(rows), "items": items,
                                              "requests": sap_b1.requests_made})

    result = dg.materialize([open_invoice_count], resources={"sap_b1": sap_resource})
    assert result.success
    metadata = result.asset_materializations_for_node("open_invoice_count")[0].metadata
    assert metadata["items"].value == 8 and metadata["requests"].value == 3
    assert sap_sim.logins == 1 and sap_sim.logouts == 1
    assert sap_sim.requests[-1].path.endswith("/Logout")


def test_resource_reads_unset_fields_from_the_environment_at_run_time(sap_sim, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("B1TWILIO_SECRETS_FILE", str(tmp_path / "none.enc"))
    monkeypatch.delenv("B1TWILIO_SECRET_KEY", raising=False)
    for name in ("B1_SERVICE_LAYER_URL", "B1_COMPANY_DB", "B1_USERNAME", "B1_PASSWORD", "B1_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    resource = SapB1Resource(backoff_base_s=0.01)  # constructing reads nothing
    with pytest.raises(ConfigurationError, match="B1_SERVICE_LAYER_URL is not set"):
        resource.create_session()
    monkeypatch.setenv("B1_SERVICE_LAYER_URL", sap_sim.base_url)
    monkeypatch.setenv("B1_COMPANY_DB", "SBODEMOUS")
    monkeypatch.setenv("B1_USERNAME", "manager")
    monkeypatch.setenv("B1_PASSWORD", "manager")
    monkeypatch.setenv("B1_TIMEZONE", "Europe/Berlin")
    session = resource.session()
    try:
        assert session.count("Items") == 8 and session.timezone == "Europe/Berlin"
    finally:
        session.close()


def test_bad_configuration_is_one_line_and_never_disables_verification(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="must end with /b1s/v1 or /b1s/v2"):
        SapB1Session("https://b1.example.com:50000", "DB", "u", "p")
    with pytest.raises(ConfigurationError, match=r"B1_CA_BUNDLE=.* does not exist"):
        SapB1Session("https://b1.example.com:50000/b1s/v1", "DB", "u", "p", ca_bundle=str(tmp_path / "x.pem"))
    with pytest.raises(ConfigurationError, match="B1_TIMEZONE='Mars/Base' is not a time zone"):
        SapB1Session("https://b1.example.com:50000/b1s/v1", "DB", "u", "p", timezone="Mars/Base")


def test_ca_bundle_trusts_a_self_signed_b1_server(tmp_path) -> None:
    from b1twilio_sim.sap_b1 import SapB1Simulator

    cert_path, key_path = self_signed_certificate(tmp_path)
    sim = SapB1Simulator(ssl_certfile=cert_path, ssl_keyfile=key_path).start_background()
    try:
        url = sim.base_url
        assert url.startswith("https://")
        served = ssl.get_server_certificate(("127.0.0.1", int(sim.url.rsplit(":", 1)[1])))
        assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(cert_path.read_text())
        with SapB1Session(url, "SBODEMOUS", "manager", "manager", ca_bundle=str(cert_path),
                          max_retries=0) as trusted:
            assert trusted.count("Items") == 8
        untrusted = SapB1Session(url, "SBODEMOUS", "manager", "manager", max_retries=3, backoff_base_s=0.01)
        with pytest.raises(SapB1Unavailable, match=r"not trusted .*CERTIFICATE_VERIFY_FAILED.*B1_CA_BUNDLE"):
            untrusted.count("Items")
        assert untrusted.requests_made == 1  # a trust problem is not retried as if it were an outage
        untrusted.close()
        # The CA is trusted but the URL names another host than the certificate: say that, not "set the
        # bundle" (it is set).
        wrong_host = SapB1Session(url.replace("127.0.0.1", "localhost"), "SBODEMOUS", "manager", "manager",
                                  ca_bundle=str(cert_path), max_retries=0)
        with pytest.raises(SapB1Unavailable, match=r"not valid for host 'localhost'.*use the host name") as caught:
            wrong_host.count("Items")
        assert "set B1_CA_BUNDLE" not in str(caught.value)
        wrong_host.close()
    finally:
        sim.stop()
