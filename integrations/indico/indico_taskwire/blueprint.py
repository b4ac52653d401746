"""URLs: all under the event's management area, so only its managers reach them."""

from indico.core.plugins import IndicoPluginBlueprint

from indico_taskwire.controllers import (
    RHBooklet,
    RHBookletInput,
    RHBookletToken,
    RHServiceSettings,
    RHTestConnection,
)

blueprint = IndicoPluginBlueprint('taskwire', __name__, url_prefix='/event/<int:event_id>/manage/taskwire')

blueprint.add_url_rule('/', 'booklet', RHBooklet, methods=('GET', 'POST'))
blueprint.add_url_rule('/service', 'service', RHServiceSettings, methods=('GET', 'POST'))
blueprint.add_url_rule('/service/test', 'test_connection', RHTestConnection, methods=('POST',))
blueprint.add_url_rule('/booklet-input.json', 'booklet_input', RHBookletInput)
blueprint.add_url_rule('/token', 'token', RHBookletToken)
