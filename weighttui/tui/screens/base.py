"""The screens the apps refresh: one typed entry point, never before the screen is mounted.

The apps call `refresh_view()` on the active screen after each coalesced data
update and each second (`status_only`). A screen that was just pushed is on
the stack before its widgets are mounted; a refresh then is dropped, because
the screen draws what is current once it is mounted (`on_mount`) and each
time it comes back on top (`on_screen_resume`). Likewise while the app shuts
down: its timers still fire after the screens' widgets are gone.
"""

from __future__ import annotations

from textual.screen import Screen

from weighttui.tui.state import RedrawRequest, RunHost, RunsHost, RunView

HelpSection = tuple[str, tuple[tuple[str, str], ...]]  # (title, ((keys, what they do), ...))


class RefreshableScreen(Screen[None]):
    # This screen's own keys for the `?` help (the app adds the keys that work everywhere).
    KEYS_HELP: tuple[HelpSection, ...] = ()
    HELP_TITLE = ""
    def refresh_view(self, *, status_only: bool = False) -> None:
        """Redraw from the app's state now (only the clock-driven parts with `status_only`)."""
        if not (self.is_mounted and self.is_running and self.app.is_running):
            # Not mounted yet: on_mount draws. Or closing (the app shutting down prunes the
            # widgets while its timers still tick): nothing to draw into.
            return
        if status_only:
            self.refresh_status()
        else:
            self.refresh_data()

    def refresh_data(self) -> None:
        """Redraw everything this screen shows from the app's state."""
        raise NotImplementedError

    def refresh_status(self) -> None:
        """Redraw what moves with the clock alone (time since, stalled): nothing by default."""

    # Textual calls these of each class in the MRO, the subclass's first: its widgets are set up
    # (columns, focus) before the first draw.
    def on_mount(self) -> None:
        self.refresh_data()

    def on_screen_resume(self) -> None:
        self.refresh_data()  # the data moved on while another screen was on top

    def on_redraw_request(self, message: RedrawRequest) -> None:
        message.stop()
        self.refresh_view()

    def action_close(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()


class RunScreen(RefreshableScreen):
    """A screen of the single-run viewer."""

    @property
    def host(self) -> RunHost:
        app = self.app
        if not isinstance(app, RunHost):
            raise TypeError(f"{type(self).__name__} needs an app with view() and open_tensor()")
        return app

    def view(self) -> RunView:
        return self.host.view()


class RunsScreen(RefreshableScreen):
    """A screen of the multi-run viewer."""

    @property
    def host(self) -> RunsHost:
        app = self.app
        if not isinstance(app, RunsHost):
            raise TypeError(f"{type(self).__name__} needs the multi-run app")
        return app
