"""The device agent (CDA4Rec's device side): history, cache, abstract, structured modelling, ranking, explanation."""
