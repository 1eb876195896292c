"""Atlas bodies built the way the real client builds them.

Reproduces Joystream/atlas `master` at commit 9a42847cae743fc6f2a3534dd0d439a562cec61f (release
5.6.2, 2025-05-21), paths under `packages/atlas/src/`. Every builder names the file and function
it reproduces. JavaScript semantics that shape the bytes are kept:

- object spread order is key order (`{type, ...entry, ...metric}`), and `JSON.stringify` drops a
  key whose value is `undefined` but keeps `null`; `NaN` and `Infinity` become `null`;
- a Promise stringifies as `{}` (`codec` on desktop, where `getVideoCodec` is async and not
  awaited);
- `UserEventsLogger.addPerformanceEvent`/`addErrorEvent` (utils/logs/asset.ts) append
  `user: this.user` last, so `user` is absent before `setUser` ran, `{}` when logged out
  (providers/user/user.provider.tsx: every field undefined), and `{accountId, memberId,
  channelId}` when logged in (`channelId` undefined, so absent, for a member without a channel).

Nothing here is taken from our own contract or its examples: when Atlas changes, re-read the
source at its new commit and change this file first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

ATLAS_COMMIT = "9a42847cae743fc6f2a3534dd0d439a562cec61f"

_UNDEFINED: Any = object()  # a JavaScript `undefined`: the key disappears from the JSON


def _js_object(*pairs: tuple[str, Any]) -> dict[str, Any]:
    """An object literal as JSON.stringify writes it: keys in order, undefined ones dropped."""
    return {key: value for key, value in pairs if value is not _UNDEFINED}


def _spread(*parts: dict[str, Any]) -> dict[str, Any]:
    """`{...a, ...b}`: later keys overwrite earlier ones but keep their first position."""
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


# -- users (providers/user/user.provider.tsx, the effect that calls UserEventsLogger.setUser) --


@dataclass(frozen=True)
class AtlasUser:
    """What `setUser` was last given; `None` means it was never called (no `user` key)."""

    account_id: str | None = None  # currentUser?.joystreamAccount (an SS58 address)
    member_id: str | None = None  # currentUser?.membershipId
    channel_id: str | None = None  # currentMemberships?.[0].channels[0]?.id

    def to_json(self) -> dict[str, Any]:
        return _js_object(
            ("accountId", _or_undefined(self.account_id)),
            ("memberId", _or_undefined(self.member_id)),
            ("channelId", _or_undefined(self.channel_id)),
        )


LOGGED_OUT = AtlasUser()


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def logged_in(n: int, *, with_channel: bool = True) -> AtlasUser:
    """A distinct logged-in user: a made-up SS58-shaped account, member and channel ids."""
    digest = hashlib.sha512(f"atlas-user-{n}".encode()).digest()
    return AtlasUser(
        account_id="5" + "".join(_BASE58[b % 58] for b in digest[:47]),
        member_id=str(1000 + n),
        channel_id=str(7000 + n) if with_channel else None,
    )


def _or_undefined(value: Any) -> Any:
    return _UNDEFINED if value is None else value


def _with_user(event: dict[str, Any], user: AtlasUser | None) -> dict[str, Any]:
    # utils/logs/asset.ts, addPerformanceEvent / addErrorEvent: `{...event, user: this.user}`.
    if user is None:
        return event
    return {**event, "user": user.to_json()}


# -- downloads (hooks/useGetAssetUrl.ts getSingleAssetUrl; providers/assets/assets.helpers.ts) --

_ORIGIN = re.compile(r"https?://[^/]+")


def download_entry(resolved_url: str, data_object_id: str | None, asset_type: str | None) -> dict:
    """`eventEntry` of getSingleAssetUrl: `distributorUrl` is the regexp match of the origin."""
    match = _ORIGIN.match(resolved_url) or _ORIGIN.search(resolved_url)
    return _js_object(
        ("dataObjectId", data_object_id),  # `id` may be null: kept as null
        ("dataObjectType", asset_type or _UNDEFINED),  # `type || undefined`
        ("resolvedUrl", resolved_url),
        ("distributorUrl", match.group(0) if match else _UNDEFINED),
    )


def asset_url(distributor_origin: str, data_object_id: str) -> str:
    """A distribution URL as the query node resolves it (the comment in getSingleAssetUrl)."""
    return f"{distributor_origin}/distributor/api/v1/assets/{data_object_id}"


def distributor_response_time(
    resolved_url: str,
    data_object_id: str,
    asset_type: str,
    *,
    fetch_start: float,
    response_start: float,
    response_end: float,
    decoded_body_size: int,
    user: AtlasUser | None,
) -> dict[str, Any]:
    """assets.helpers.ts logDistributorPerformance -> asset.ts logDistributorResponseTime.

    `response_start` 0 is what a browser reports for a cross-origin load without
    Timing-Allow-Origin: `initialResponseTime` then comes out negative. `downloadSpeed` is
    `decodedBodySize / (responseEnd - responseStart)`: NaN or Infinity serialise as null.
    """
    span = response_end - response_start
    speed: Any = None if span == 0 else decoded_body_size / span
    metric = _js_object(
        ("initialResponseTime", response_start - fetch_start),
        ("fullResponseTime", response_end - fetch_start),
        ("downloadSpeed", speed),
    )
    entry = download_entry(resolved_url, data_object_id, asset_type)
    return _with_user(_spread({"type": "distributor-response-time"}, entry, metric), user)


def playback_wrong_codec(
    resolved_url: str, data_object_id: str, asset_type: str, *, mobile: bool, user: AtlasUser | None
) -> dict[str, Any]:
    """useGetAssetUrl.ts getSingleAssetUrl, the MediaError branch -> logWrongCodecEvent.

    `codec` is set only for videos; on desktop it is the unawaited Promise of getVideoCodec
    (stringified `{}`), on mobile the empty string.
    """
    info = _js_object(("assetType", asset_type))
    if asset_type == "video":
        info["codec"] = "" if mobile else {}
    entry = download_entry(resolved_url, data_object_id, asset_type)
    return _with_user(_spread({"type": "playback-wrong-codec"}, entry, info), user)


def playback_is_slow(
    resolved_url: str,
    video_id: str,
    media_id: str,
    *,
    user: AtlasUser | None,
    title: str,
    channel_id: str = "7001",
) -> dict[str, Any]:
    """components/_video/VideoPlayer/VideoPlayer.tsx, the `waiting` handler ->
    logPlaybackIsSlowEvent({...videoPlaybackData, dataObjectId, dataObjectType, resolvedUrl}).

    No `distributorUrl`: the distributor is only in `resolvedUrl` (`player.src()`).
    """
    playback = {
        "videoId": video_id,
        "channelId": channel_id,
        "title": title,
        "category": "Education",
        "totalLength": 643,
        "fullScreen": False,
        "quality": "1080",
        "isNft": False,
    }
    entry = {"dataObjectId": media_id, "dataObjectType": "video", "resolvedUrl": resolved_url}
    return _with_user(_spread({"type": "playback-is-slow"}, playback, entry), user)


# -- uploads (providers/uploads/uploads.hooks.ts startFileUpload; assets.provider.tsx) ----------


def upload_error(
    data_object_id: str, bucket_id: str, message: str, *, user: AtlasUser | None
) -> dict[str, Any]:
    """startFileUpload catch, network failure -> logUploadError({dataObjectId,
    storageOperatorId}, e): sent with the distributor's type name, `distributor-response-error`.
    """
    return _with_user(
        {
            "type": "distributor-response-error",
            "dataObjectId": data_object_id,
            "storageOperatorId": bucket_id,
            "error": message,
        },
        user,
    )


def bucket_blacklisted(bucket_id: str, *, user: AtlasUser | None) -> dict[str, Any]:
    """assets.provider.tsx markStorageOperatorFailed -> logDistributorBlacklistedEvent(
    {distributorId: operatorId}): the id is the storage bucket's, despite the name."""
    return _with_user({"type": "distributor-blacklisted", "distributorId": bucket_id}, user)


def asset_upload_failed(
    data_object_id: str,
    asset_type: str,
    bucket_id: str,
    bucket_endpoint: str,
    message: str,
    *,
    user: AtlasUser | None,
) -> dict[str, Any]:
    """startFileUpload catch, after the last retry -> logAssetUploadFailedEvent."""
    return _with_user(
        {
            "type": "asset-upload-failed",
            "dataObjectId": data_object_id,
            "dataObjectType": asset_type,
            "storageOperatorId": bucket_id,
            "storageOperatorUrl": bucket_endpoint,
            "error": message,
        },
        user,
    )


def missing_operators_for_bag(channel_id: str, *, user: AtlasUser | None) -> dict[str, Any]:
    """assets.provider.tsx getAllStorageOperatorsForBag -> logMissingOperatorsForBag(bagId);
    the bag of a channel's uploads is `dynamic:channel:<channel id>` (createChannelBagId)."""
    return _with_user(
        {"type": "missing-operators-for-bag", "storageBagId": f"dynamic:channel:{channel_id}"},
        user,
    )


MAX_BUCKET_RETRY = 3  # uploads.hooks.ts


def failed_upload(
    data_object_id: str,
    asset_type: str,
    buckets: list[tuple[str, str]],
    message: str,
    *,
    user: AtlasUser | None,
) -> list[dict[str, Any]]:
    """One upload that fails on the network at every bucket it tries (startFileUpload).

    Each attempt sends its error and blacklists the bucket, then retries on the next one while
    `retry < MAX_BUCKET_RETRY`; the last attempt gives up with asset-upload-failed. `buckets` are
    (bucket id, endpoint) in the order getClosestStorageOperatorForBag picks them.
    """
    events: list[dict[str, Any]] = []
    for attempt in range(MAX_BUCKET_RETRY + 1):
        bucket_id, _ = buckets[attempt % len(buckets)]
        events.append(upload_error(data_object_id, bucket_id, message, user=user))
        events.append(bucket_blacklisted(bucket_id, user=user))
    bucket_id, endpoint = buckets[MAX_BUCKET_RETRY % len(buckets)]
    events.append(
        asset_upload_failed(data_object_id, asset_type, bucket_id, endpoint, message, user=user)
    )
    return events


# -- what Atlas also sends through the same logger, none of it about infrastructure ------------


def not_infrastructure(
    user: AtlasUser | None, free_text: str = "private words"
) -> list[dict[str, Any]]:
    """One of each non-infrastructure event, with the fields its call site passes; `free_text`
    stands in for what users and errors write (titles, descriptions, messages)."""
    return [
        # api/client/index.ts initializePerformanceObserver -> logUserEvent
        _with_user(
            {
                "type": "request-response-time",
                "requestName": "GetBasicVideos",
                "timeToComplete": 231.4,
            },
            user,
        ),
        # providers/assets/assets.provider.tsx initBenchmark -> logUserBenchmarkTime
        _with_user({"type": "user-statistics-benchmark-time", "time": 1830.75}, user),
        # views/studio/VideoWorkspace/VideoWorkspace.hooks.ts -> logUserEvent
        _with_user(
            {
                "type": "user-action-video-created",
                "memberId": "1042",
                "metadata": {"title": "My holiday", "description": free_text},
                "nftMetadata": None,
            },
            user,
        ),
        # views/studio/VideoWorkspace/VideoWorkspace.hooks.ts -> logNftMintingFailedEvent
        _with_user(
            {
                "type": "nft-minting-failed",
                "details": {"nft": {"royalty": 5, "nested": {"deep": [1, 2, {"x": None}]}}},
                "error": f"Transaction failed: {free_text}",
            },
            user,
        ),
        # components/_video/VideoPlayer/VideoPlayer.tsx -> logUserError('playback-has-crashed')
        _with_user(
            {
                "type": "playback-has-crashed",
                "video": {"id": "3301", "urls": ["https://a.example/distributor/api/v1/assets/9"]},
            },
            user,
        ),
        # hooks/useCreateMember.ts -> logUserError('failed-avatar-upload')
        _with_user({"type": "failed-avatar-upload", "message": free_text}, user),
        # providers/uploads/uploads.hooks.ts -> logUserError('missing-storage-operator')
        _with_user(
            {
                "type": "missing-storage-operator",
                "id": "5521",
                "assetType": "thumbnail",
                "bagId": "dynamic:channel:7001",
            },
            user,
        ),
    ]


def body(events: list[dict[str, Any]]) -> bytes:
    """The POST body of sendPerformanceEvents / sendErrorEvents: `{events: [...]}` via axios."""
    return orjson.dumps({"events": events})


# -- traffic: many users, both batch kinds ---------------------------------------------------

#: Public distributor origins as the query node lists them (hosts only are published).
DISTRIBUTORS = (
    "https://mrbovo.distributor.cc",
    "https://dist1.joyutils.org",
    "https://Distributor.Example:8443",  # non-default port, upper case: normalised
)
DISTRIBUTOR_NODES = ("mrbovo.distributor.cc", "dist1.joyutils.org", "distributor.example:8443")
BUCKETS = (("3", "https://storage-3.example/storage"), ("7", "https://storage-7.example/storage"))


def performance_batch(user: AtlasUser | None, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """A 60 s flush of sendPerformanceEvents: downloads of thumbnails and videos on the
    distributors, one hidden-timing load, a slow playback, and Atlas's own non-infra events."""
    events = []
    for i in range(n):
        origin = DISTRIBUTORS[(seed + i) % len(DISTRIBUTORS)]
        object_id = str(40_000 + seed * 100 + i)
        asset_type = "video" if i % 5 == 0 else "thumbnail"
        hidden = i % 7 == 3  # cross-origin without Timing-Allow-Origin: responseStart is 0
        events.append(
            distributor_response_time(
                asset_url(origin, object_id),
                object_id,
                asset_type,
                fetch_start=1520.4 + i,
                response_start=0 if hidden else 1605.9 + i,
                response_end=2210.7 + 3 * i,
                decoded_body_size=0 if hidden else 48_213 + i,
                user=user,
            )
        )
    events.append(
        playback_is_slow(
            asset_url(DISTRIBUTORS[seed % len(DISTRIBUTORS)], "8812"),
            "3301",
            "8812",
            user=user,
            title="A title only this viewer watched",
        )
    )
    events.extend(not_infrastructure(user)[:3])
    return events


def error_batch(user: AtlasUser | None, *, seed: int = 0) -> list[dict[str, Any]]:
    """A 5 s flush of sendErrorEvents: a codec error, a failed upload with its retries, a bag
    with no operators left, and the non-infra errors."""
    events = [
        playback_wrong_codec(
            asset_url(DISTRIBUTORS[seed % len(DISTRIBUTORS)], "8813"),
            "8813",
            "video",
            mobile=seed % 2 == 1,
            user=user,
        ),
    ]
    events.extend(
        failed_upload(
            str(5500 + seed),
            "video",
            list(BUCKETS),
            "timeout of 30000ms exceeded" if seed % 2 else "Network Error",
            user=user,
        )
    )
    events.append(missing_operators_for_bag(str(7000 + seed), user=user))
    events.extend(not_infrastructure(user)[3:])
    return events


UserFactory = Callable[[int], AtlasUser | None]


def user_variant(n: int) -> AtlasUser | None:
    """Most users logged in, some logged out, a few before setUser ran."""
    if n % 10 == 9:
        return None
    if n % 5 == 4:
        return LOGGED_OUT
    return logged_in(n, with_channel=n % 3 != 0)
