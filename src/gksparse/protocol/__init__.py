"""The paper's protocol: settings (`config`, `presets`), the stages and their order
(`stages`, `pipeline`), the run folder (`rundir`), the sacred experiment (`experiment`,
`observer`, `commandline`), trained encoders (`trained`) and pictures (`plots`)."""

import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # sacred's import
