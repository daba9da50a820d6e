"""The daemon side: model runtime, served-model set and hot reload, publishing, scoring, HTTP."""
