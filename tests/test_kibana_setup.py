"""`relay es-setup --kibana URL`: data views and a dashboard reader role, idempotently.

The command runs as a user would run it (a subprocess), against the Elasticsearch fake and a
Kibana fake (tests/fake_kibana.py) that checks the documented request shapes and the kbn-xsrf
header as Kibana does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession

from relay.sinks.kibana_setup import KibanaError, KibanaPlan, run_kibana_setup
from tests.fake_elasticsearch import FakeElasticsearch
from tests.fake_kibana import FakeKibana
from tests.test_elasticsearch_sink import es_setup

ELASTIC = "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="  # elastic:changeme, as es_setup() logs in


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeElasticsearch]:
    fake = FakeElasticsearch()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def kibana() -> AsyncIterator[FakeKibana]:
    fake = FakeKibana({ELASTIC})
    await fake.start()
    yield fake
    await fake.close()


async def test_data_views_and_reader_role_once(
    fake_es: FakeElasticsearch, kibana: FakeKibana
) -> None:
    code, out = await es_setup(fake_es, "--kibana", kibana.url)
    assert code == 0, out
    assert {
        view_id: (view["title"], view["timeFieldName"])
        for view_id, view in kibana.data_views.items()
    } == {
        "relay-summaries": ("relay-summaries-*", "window_start_ms"),
        "relay-batches": ("relay-batches-*", "window_start_ms"),
    }
    role = kibana.roles["relay-dashboard-reader"]
    assert role["elasticsearch"] == {
        "cluster": [],
        "indices": [{"names": ["relay-*"], "privileges": ["read", "view_index_metadata"]}],
    }
    assert role["kibana"] == [
        {
            "base": [],
            "feature": {"discover": ["read"], "dashboard": ["read"], "visualize": ["read"]},
            "spaces": ["*"],
        }
    ]
    writes = [r for r in kibana.requests if r.method != "GET"]
    assert writes and all("kbn-xsrf" in r.headers for r in writes)
    assert "Kibana data view relay-summaries: created" in out
    # The Elasticsearch part ran first, as without --kibana.
    assert fake_es.recorded("PUT", "/_index_template/relay-summaries")

    # Again: the data views exist and are left alone, the role is put again (same content).
    posts = len([r for r in kibana.requests if r.method == "POST"])
    code, again = await es_setup(fake_es, "--kibana", kibana.url)
    assert code == 0, again
    assert len([r for r in kibana.requests if r.method == "POST"]) == posts
    assert again.count("exists (relay-") == 2
    assert kibana.roles["relay-dashboard-reader"] == role


async def test_a_prefix_names_everything(fake_es: FakeElasticsearch, kibana: FakeKibana) -> None:
    code, out = await es_setup(fake_es, "--index-prefix", "jsg-", "--kibana", kibana.url + "/")
    assert code == 0, out
    assert sorted(v["title"] for v in kibana.data_views.values()) == [
        "jsg-batches-*",
        "jsg-summaries-*",
    ]
    assert kibana.roles["jsg-dashboard-reader"]["elasticsearch"]["indices"][0]["names"] == ["jsg-*"]


async def test_kibana_refusing_the_credentials_is_an_error(
    fake_es: FakeElasticsearch, kibana: FakeKibana
) -> None:
    kibana.credentials = {"Basic c29tZW9uZTplbHNl"}
    code, out = await es_setup(fake_es, "--kibana", kibana.url)
    assert code == 2
    assert "relay es-setup: Kibana:" in out and "HTTP 401" in out
    assert kibana.data_views == {} and kibana.roles == {}


async def test_the_fake_refuses_writes_without_kbn_xsrf(kibana: FakeKibana) -> None:
    """What makes the header check above able to fail."""
    async with ClientSession(headers={"Authorization": ELASTIC}) as http:
        with pytest.raises(KibanaError, match="kbn-xsrf"):
            await run_kibana_setup(http, kibana.url, KibanaPlan(), print)
    assert kibana.data_views == {}
