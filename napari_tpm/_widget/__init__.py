"""The napari dock widget (Qt lives here and in the reader/writer only, never in the core)."""

from napari_tpm._widget._main import TPMWidget

__all__ = ["TPMWidget"]
