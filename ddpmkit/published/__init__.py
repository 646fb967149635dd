"""Published weights in and out: diffusers ``UNet2DModel`` folders and pipelines, OpenAI's
improved/guided-diffusion ``.pt`` files with their flags; an imported model becomes an ordinary
run (:func:`~ddpmkit.published.convert.import_checkpoint`). Above ``training/``: it writes and
reads runs' configs."""
