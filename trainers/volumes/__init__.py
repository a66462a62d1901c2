"""Volumes (CT, MRI) as the 3D images they are: read with their geometry, normalized as the field
does, split by case, trained on in 3D patches, predicted by sliding window and written back in
their own grid."""
