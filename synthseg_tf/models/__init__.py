"""Keras models: the pix2pix label-to-image GAN, segmentation U-Nets and image classifiers."""
