"""The tracking and artifact stores over HTTP, for ``http(s)://`` tracking URIs."""

from loopwright.backends.rest.store import RestArtifactStore, RestTrackingStore

__all__ = ["RestArtifactStore", "RestTrackingStore"]
