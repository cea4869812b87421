"""The cloud agent (CDA4Rec's cloud side): planning, semantic user modelling, tag retrieval, CHORD strategies."""
